"""The service middleware on its own: an unexpected error becomes one 500 envelope and is not re-raised (which
would make the server drop the keep-alive connection); a too-large body is drained before the 413."""

import json

from app.api.middleware import ServiceMiddleware


async def broken_app(scope, receive, send):
    await receive()
    raise RuntimeError("bug")


def scope(path="/v1/score", method="POST"):
    return {"type": "http", "path": path, "method": method, "headers": [(b"content-type", b"application/json")]}


async def run(app, body_chunks, limit=1024):
    sent = []
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(body_chunks) - 1} for i, c in enumerate(body_chunks)
    ]
    consumed = []

    async def receive():
        if messages:
            consumed.append(1)
            return messages.pop(0)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await ServiceMiddleware(app, max_body_bytes=limit, metrics_provider=lambda: None)(scope(), receive, send)
    return sent, len(consumed)


async def test_unexpected_error_is_one_500_envelope_and_not_reraised():
    sent, _ = await run(broken_app, [b"{}"])
    start, body = sent[0], sent[1]
    assert start["status"] == 500
    assert (b"connection", b"close") not in start["headers"]
    assert json.loads(body["body"])["error"]["code"] == "internal_error"


async def test_too_large_body_is_drained_then_413():
    chunks = [b"x" * 600, b"x" * 600, b"x" * 600]
    sent, consumed = await run(broken_app, chunks)
    assert consumed == 3  # read to the end, so the client is not reset mid-upload
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") not in sent[0]["headers"]
