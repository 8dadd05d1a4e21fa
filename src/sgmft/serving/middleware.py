"""ASGI middlewares of the HTTP service: a request body over its limit is refused before it is
stored (`BodyLimit`), and an unexpected failure is a clean 500 that closes its connection
(`ServerErrors`)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging

from fastapi.responses import JSONResponse

from sgmft.limits import LIMITS

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
    """ASGI middleware that keeps request bodies to their bounds:

    - a body over its limit (``limit``, or the one of its path in ``paths``) is answered 413
      before the form parser stores any of it (by its Content-Length), or, when it streams
      without one (chunked), as soon as the bytes received pass the limit;
    - the bodies of all requests together hold at most ``in_flight`` bytes (each counted at its
      Content-Length, or its path's limit when chunked): past that a request is answered 503 with
      ``Retry-After`` (a request alone is always taken), and when the last one ends the memory
      freed is returned to the system (`return_memory`);
    - a body whose next piece does not come within ``read_seconds`` is answered 408, and its
      connection closed.

    In the streamed cases the app sees the client go, and its own answer is replaced."""

    def __init__(self, app, limit: int, paths: dict[str, int] | None = None,
                 in_flight: int = LIMITS.flight_bytes, read_seconds: float = LIMITS.body_seconds):
        self.app, self.default, self.paths = app, limit, paths or {}
        self.in_flight, self.read_seconds, self.held = in_flight, read_seconds, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.paths.get(scope.get("path", ""), self.default)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await _answer(send, 413, f"the request body exceeds the limit of {limit} bytes "
                                            "(--max-upload-mb for /predict, SGMFT_LIMIT_REQUEST_BYTES)")
        size = int(length) if length.isdigit() else limit if scope.get("method") in ("POST", "PUT") else 0
        if self.held and self.held + size > self.in_flight:
            return await _answer(send, 503, "the server is busy with other large requests; retry in a "
                                            "moment", {"Retry-After": "2"})
        self.held += size
        try:
            await self._guarded(scope, receive, send, limit)
        finally:
            self.held -= size
            if size > 1024 * 1024 and not self.held:
                return_memory()

    async def _guarded(self, scope, receive, send, limit: int) -> None:
        received, cut, started, done = 0, None, False, False

        async def counted():
            nonlocal received, cut, done
            if cut:
                return {"type": "http.disconnect"}
            try:
                message = await (receive() if done else asyncio.wait_for(receive(), self.read_seconds))
            except TimeoutError:
                cut = 408
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if received > limit and not started:
                    cut = 413
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
        if cut == 413:
            await _answer(send, 413, f"the request body exceeds the limit of {limit} bytes "
                                     "(--max-upload-mb for /predict, SGMFT_LIMIT_REQUEST_BYTES)")
        elif cut == 408:
            await _answer(send, 408, f"the request body stopped arriving (nothing for {self.read_seconds:g} "
                                     "s; SGMFT_LIMIT_BODY_SECONDS)", {"Connection": "close"})


async def _answer(send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    response = JSONResponse({"detail": detail}, status_code=status, headers=headers)
    await response({"type": "http"}, None, send)


def return_memory() -> None:
    """Give the memory freed by a large request back to the system (glibc keeps it otherwise,
    and a server's resident size would only grow); nothing where glibc is not the allocator."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
