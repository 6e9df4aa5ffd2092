"""The tracing middleware: one server span per HTTP request, continuing the caller's W3C `traceparent` /
`tracestate`. Installed by create_app only when tracing is configured; the spans come from the app's telemetry,
built in the lifespan (so a request before start-up completes, or after shutdown, passes through untraced)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.telemetry.base import Telemetry


class TracingMiddleware:
    def __init__(self, app: Any, *, telemetry_provider: Callable[[], Telemetry | None]):
        self.app = app
        self.telemetry_provider = telemetry_provider

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        telemetry = self.telemetry_provider() if scope["type"] == "http" else None
        handle = getattr(telemetry, "handle_http", None)
        if handle is None:
            return await self.app(scope, receive, send)
        await handle(self.app, scope, receive, send)
