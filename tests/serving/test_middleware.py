"""The request-body bounds of the server (`sgmft.serving.middleware.BodyLimit`), driven as ASGI
calls: a stalled body is a 408 that closes, bodies in flight are bounded (503 + Retry-After),
and an over-long one is a 413."""

import asyncio
import json

import pytest

from sgmft.serving.middleware import BodyLimit


async def echo(scope, receive, send):
    """An app that reads the whole body, then answers 200 with its length."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise OSError("client went")
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps({"size": size}).encode()})


def call(middleware, pieces, headers=(), stall=False):
    """Send ``pieces`` of a body (then stall, if asked); the status, headers and detail answered."""
    sent = []

    async def receive():
        if pieces:
            body = pieces.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pieces) or stall}
        await asyncio.sleep(60)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict/batch", "headers": list(headers)}
    asyncio.run(asyncio.wait_for(middleware(scope, receive, send), 10))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), json.loads(body)


def test_a_whole_body_passes_and_a_stalled_one_is_a_408_that_closes():
    middleware = BodyLimit(echo, limit=1000, read_seconds=0.2)
    assert call(middleware, [b"ab", b"cd"])[0::2] == (200, {"size": 4})
    status, headers, answer = call(middleware, [b"ab"], stall=True)
    assert status == 408 and headers[b"connection"] == b"close"
    assert "stopped arriving" in answer["detail"] and middleware.held == 0


def test_an_over_long_body_is_a_413_by_length_or_as_it_streams():
    middleware = BodyLimit(echo, limit=10)
    assert call(middleware, [b"x" * 4], headers=[(b"content-length", b"11")])[0] == 413
    assert call(middleware, [b"x" * 6, b"x" * 6])[0] == 413


def test_bodies_in_flight_are_bounded_with_a_503_and_retry_after(monkeypatch):
    trims = []
    monkeypatch.setattr("sgmft.serving.middleware.return_memory", lambda: trims.append(1))
    middleware = BodyLimit(echo, limit=4 * 1024 * 1024, in_flight=5 * 1024 * 1024)
    big = [(b"content-length", str(3 * 1024 * 1024).encode())]
    middleware.held = 3 * 1024 * 1024  # another request's body is being read
    status, headers, answer = call(middleware, [b"x"], headers=big)
    assert status == 503 and headers[b"retry-after"] == b"2" and "busy" in answer["detail"]
    middleware.held = 0  # alone, a request is always taken
    assert call(middleware, [b"x" * (3 * 1024 * 1024)], headers=big)[0] == 200
    assert middleware.held == 0 and trims == [1]  # the freed memory handed back once idle


@pytest.mark.parametrize("held", [0, 1])
def test_a_request_without_a_length_counts_at_its_paths_limit(held):
    middleware = BodyLimit(echo, limit=100, in_flight=150)
    middleware.held = held * 60
    assert call(middleware, [b"x" * 10])[0] == (503 if held else 200)
