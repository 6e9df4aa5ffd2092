"""ASGI middleware: body-size limit (before any parsing) and per-route request metrics."""

from __future__ import annotations

import json
import time

from app.errors import error_body
from app.metrics import Metrics

ROUTES = {"/v1/chat/completions": "chat", "/v1/score": "score"}


class _TooLarge(Exception):
    pass


class BodyLimitAndMetrics:
    def __init__(self, app, *, max_body_bytes: int, metrics_provider):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics_provider = metrics_provider  # () -> Metrics | None (None while starting)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _reject_too_large(send, limit)

        seen = 0
        started = time.monotonic()
        status = {"code": 500, "sent": False}

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._observe(scope, status["code"], started)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not status["sent"]:
                await _reject_too_large(send, limit)
                self._observe(scope, 413, started)

    def _observe(self, scope, code: int, started: float) -> None:
        route = ROUTES.get(scope.get("path", ""))
        metrics: Metrics | None = self.metrics_provider()
        if route is None or metrics is None:
            return
        adapter = (scope.get("state") or {}).get("adapter", "none")
        metrics.requests.labels(route, adapter, str(code)).inc()
        if code < 400:
            metrics.request_latency.labels(route, adapter).observe(time.monotonic() - started)


async def _reject_too_large(send, limit: int) -> None:
    body = json.dumps(error_body(f"request body exceeds {limit} bytes", "invalid_request_error",
                                 "payload_too_large")).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
