"""The pooled HTTP client for one OpenAI-compatible upstream, with transport failures and upstream answers mapped to
Tonewatch's typed errors.

Connect and read timeouts, bounded connections, and retries only for connection errors, i.e. before a byte of the
request was sent (httpx's transport retries), so a generation is never sent twice.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from app.errors import QueueFull, UpstreamRejected, UpstreamTimeout, UpstreamUnavailable
from app.metrics import Metrics


class UpstreamClient:
    """The pooled HTTP client for one upstream, with errors mapped to Tonewatch's typed ones."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        api_key: str | None,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_connections: int,
        metrics: Metrics,
    ):
        self.base_url = base_url
        self.name = name
        self.metrics = metrics
        self.failed_at = 0.0  # monotonic time of the last transport failure
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.http = httpx.AsyncClient(
            base_url=base_url + "/",
            headers=headers,
            transport=httpx.AsyncHTTPTransport(retries=2, limits=limits),
            timeout=httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=30.0, pool=read_timeout_s),
        )

    def count(self, status: int | str) -> None:
        self.metrics.upstream_requests.labels(self.name, str(status)).inc()

    def failure(self, exc: httpx.HTTPError, what: str) -> Exception:
        """The typed error for a transport failure (counted once here)."""
        self.failed_at = time.monotonic()
        if isinstance(exc, httpx.PoolTimeout):
            self.count("pool_full")
            return QueueFull(f"all {self.name} upstream connections are busy; retry shortly", retry_after_s=1.0)
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            self.count("unreachable")
            return UpstreamUnavailable(
                f"upstream {self.name!r} at {self.base_url} is unreachable ({what}: {type(exc).__name__})"
            )
        if isinstance(exc, httpx.TimeoutException):
            self.count("timeout")
            return UpstreamTimeout(f"upstream {self.name!r} did not answer in time ({what})")
        self.count("error")
        return UpstreamUnavailable(f"upstream {self.name!r} failed during {what}: {type(exc).__name__}")

    def rejected(self, response: httpx.Response, content: bytes) -> Exception:
        self.count(response.status_code)
        try:
            body: Any = json.loads(content)
        except ValueError:
            body = {
                "error": {
                    "message": content.decode("utf-8", "replace")[:2000],
                    "type": "upstream_error",
                    "code": str(response.status_code),
                    "param": None,
                }
            }
        if response.status_code < 500:
            return UpstreamRejected(response.status_code, body)
        message = (
            body.get("error", {}).get("message")
            if isinstance(body, dict) and isinstance(body.get("error"), dict)
            else None
        )
        return UpstreamUnavailable(
            f"upstream {self.name!r} answered {response.status_code}: {message or 'server error'}"
        )

    async def get_json(self, path: str, timeout_s: float | None = None) -> Any:
        try:
            response = await self.http.get(path, timeout=timeout_s or httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise self.failure(exc, f"GET {path}") from None
        if response.status_code >= 400:
            raise self.rejected(response, response.content)
        self.count(response.status_code)
        return response.json()

    async def post_json(self, path: str, body: dict[str, Any]) -> httpx.Response:
        try:
            response = await self.http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise self.failure(exc, f"POST {path}") from None
        if response.status_code >= 400:
            raise self.rejected(response, response.content)
        self.count(response.status_code)
        return response

    async def open_stream(self, path: str, body: dict[str, Any]) -> httpx.Response:
        request = self.http.build_request("POST", path, json=body)
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self.failure(exc, f"POST {path}") from None
        if response.status_code >= 400:
            content = await response.aread()
            await response.aclose()
            raise self.rejected(response, content)
        self.count(response.status_code)
        return response

    async def close(self) -> None:
        await self.http.aclose()
