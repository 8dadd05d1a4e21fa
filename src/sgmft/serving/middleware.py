"""ASGI middlewares of the HTTP service: a request body over its limit is refused before it is
stored (`BodyLimit`), and an unexpected failure is a clean 500 that closes its connection
(`ServerErrors`)."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


class ServerErrors:
    """ASGI middleware: an unexpected failure is a 500 in words, without a traceback, that says
    ``Connection: close`` (the server closes the connection after it, cleanly, instead of
    dropping a keep-alive connection that a client is about to reuse), and is logged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            log.exception("an unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = JSONResponse({"detail": "an unexpected error on the server; it is logged, and the "
                                               "server goes on"}, status_code=500,
                                    headers={"Connection": "close"})
            await response(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request whose body is over its limit (``limit``, or the one of its
    path in ``paths``) is answered 413 before the form parser stores any of it (by its
    Content-Length), or, when it streams without one (chunked), as soon as the bytes received
    pass the limit: the app then sees the client go, and its own answer is replaced by the 413."""

    def __init__(self, app, limit: int, paths: dict[str, int] | None = None):
        self.app, self.default, self.paths = app, limit, paths or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.paths.get(scope.get("path", ""), self.default)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await self._refuse(send, limit)
        received, cut, started = 0, False, False

        async def counted():
            nonlocal received, cut
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not started:
                    cut = True
                    return {"type": "http.disconnect"}
            return message

        async def watched(message):
            nonlocal started
            if cut:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception:
            if not cut:
                raise
        if cut:
            await self._refuse(send, limit)

    async def _refuse(self, send, limit: int) -> None:
        response = JSONResponse({"detail": f"the request body exceeds the limit of {limit} bytes "
                                           "(--max-upload-mb for /predict, SGMFT_LIMIT_REQUEST_BYTES)"},
                                status_code=413)
        await response({"type": "http"}, None, send)
