"""ASGI middleware, outermost first in effect:

* a request id on every response (`x-request-id`: the client's when it is a sane token, else a new one);
* the body is read completely before the app sees it: a body over the limit gets 413 after it has been drained
  (so clients that send the whole body first, and chunked uploads, see the 413 instead of a reset or a 400);
* per-route request metrics with bounded labels;
* a last-resort 500 in the error envelope that does not drop the keep-alive connection (Starlette's own
  ServerErrorMiddleware re-raises, which makes the server close it).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from app.api.errors import error_body
from app.metrics import Metrics

log = logging.getLogger("tonewatch.http")
ROUTES = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/responses": "responses",
    "/v1/score": "score",
}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Past this many bytes a too-large body is not drained any further: the connection is closed instead.
DRAIN_LIMIT_FACTOR = 64


class ServiceMiddleware:
    def __init__(
        self, app, *, max_body_bytes: int, metrics_provider: Callable[[], Metrics | None], replica: str = "replica"
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics_provider = metrics_provider
        self.replica = replica.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500, "started": False}

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                extra = [(b"x-request-id", request_id.encode()), (b"x-tonewatch-replica", self.replica)]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._observe(scope, status["code"], started)

        body_receive = receive
        if scope.get("method") in {"POST", "PUT", "PATCH"}:
            body, complete = await self._read_body(receive)
            if body is None:
                await _send_json(
                    tracked_send,
                    413,
                    error_body(
                        f"request body exceeds {self.max_body_bytes} bytes",
                        "invalid_request_error",
                        "payload_too_large",
                    ),
                    close=not complete,
                )
                return
            body_receive = _replay(body, receive)
        try:
            await self.app(scope, body_receive, tracked_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not status["started"]:
                await _send_json(
                    tracked_send, 500, error_body("internal server error", "server_error", "internal_error")
                )

    async def _read_body(self, receive) -> tuple[bytes | None, bool]:
        """(body, True) within the limit; (None, drained?) past it. Drains up to DRAIN_LIMIT_FACTOR x the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return (None, False) if size > self.max_body_bytes else (b"".join(chunks), True)
            piece = message.get("body", b"")
            size += len(piece)
            if size <= self.max_body_bytes:
                chunks.append(piece)
            elif size > self.max_body_bytes * DRAIN_LIMIT_FACTOR:
                return None, False
            if not message.get("more_body", False):
                return (b"".join(chunks), True) if size <= self.max_body_bytes else (None, True)

    def _observe(self, scope, code: int, started: float) -> None:
        route = ROUTES.get(scope.get("path", ""))
        metrics = self.metrics_provider()
        if route is None or metrics is None:
            return
        # the services put a bounded label here (a loaded adapter, a configured source, or "external")
        adapter = (scope.get("state") or {}).get("adapter_label", "none")
        metrics.requests.labels(route, adapter, str(code)).inc()
        if code < 400:
            metrics.request_latency.labels(route, adapter).observe(time.monotonic() - started)


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: disconnect notifications come from the real connection

    return replayed


async def _send_json(send, status: int, payload: dict, close: bool = False) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
