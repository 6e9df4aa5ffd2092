"""Typed errors: a code, a message for a human, and the request field at fault. Nothing here knows HTTP;
`app/api/errors.py` is the one place that maps these to status codes and the error envelope."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class TonewatchError(Exception):
    code = "internal_error"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(TonewatchError):
    code = "invalid_request"


class RequestInvalid(InvalidRequest):
    """A body that failed schema validation; `errors` are pydantic's, worded for humans in app/api/errors.py."""

    def __init__(self, errors: Sequence[Mapping[str, Any]]):
        super().__init__("invalid request")
        self.errors = errors


class InvalidBody(InvalidRequest):
    """A body Tonewatch cannot read as JSON: empty, not UTF-8, not JSON, not an object, or nested too deeply."""


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class UnsupportedField(InvalidRequest):
    """A field that would change the output and that Tonewatch does not implement (never silently ignored)."""

    code = "unsupported_field"


class ModelNotFound(TonewatchError):
    code = "model_not_found"


class NotFound(TonewatchError):
    code = "not_found"


class Conflict(TonewatchError):
    code = "conflict"


class InvalidAdapter(TonewatchError):
    code = "invalid_adapter"


class PayloadTooLarge(TonewatchError):
    code = "payload_too_large"


class Unauthorized(TonewatchError):
    code = "invalid_api_key"


class Forbidden(TonewatchError):
    """A capability that is switched off until the operator configures it (admin token, history readers)."""

    code = "disabled"


class NotYourSession(TonewatchError):
    """A client key writing into a session that another key created (each key sees only its own sessions)."""

    code = "session_owned_by_another_key"


class QueueFull(TonewatchError):
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueTimeout(TonewatchError):
    code = "queue_timeout"


class EngineUnavailable(TonewatchError):
    code = "engine_unavailable"


class GenerationFailed(TonewatchError):
    """This request's generation failed (its row alone); other requests are unaffected."""

    code = "generation_failed"


class Cancelled(TonewatchError):
    """The client went away; nobody reads this, but every request still gets exactly one terminal event."""

    code = "cancelled"


class StoreDown(TonewatchError):
    code = "store_unavailable"


class NotSupportedByBackend(TonewatchError):
    """The configured generation backend cannot do this (e.g. adapter admin on a plain OpenAI-compatible API)."""

    code = "not_implemented"


class UpstreamUnavailable(TonewatchError):
    code = "upstream_unavailable"


class UpstreamTimeout(TonewatchError):
    code = "upstream_timeout"


class UpstreamRejected(TonewatchError):
    """The upstream answered 4xx: its status and body are passed through unchanged."""

    code = "upstream_error"

    def __init__(self, status: int, body: Any, content_type: str = "application/json"):
        message = (
            body.get("error", {}).get("message", "")
            if isinstance(body, dict) and isinstance(body.get("error"), dict)
            else str(body)[:500]
        )
        super().__init__(message or f"upstream answered {status}")
        self.status = status
        self.body = body
        self.content_type = content_type
