"""The telemetry seam the services call, and its no-op (what runs when no OTLP endpoint is configured).

Every method of the no-op returns at once and allocates nothing, so the hooks in the request path cost a method
call when tracing is off. `app.telemetry.otel.OtelTelemetry` is the implementation behind the same methods.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from app.backends.base import ChatCall, Completed, StreamEnd

_NULL: AbstractContextManager[None] = nullcontext()


class Generation:
    """One generation (`chat {model}` / `text_completion {model}` span). Used as a context manager around a whole
    non-streamed call (active inside, ended on exit, an exception recorded), or, for a stream, activated around
    each step that must be inside it and finished by the relay."""

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        return None

    def activate(self) -> AbstractContextManager[None]:
        """Make the span current (children, events and the upstream's traceparent hang under it)."""
        return _NULL

    def chunk(self, payload: dict[str, Any] | bytes) -> None:
        """A relayed stream chunk (the response id, the upstream's usage)."""

    def completed(self, done: Completed) -> None:
        """The response's attributes (id, model, finish reasons, usage, latencies, output when captured)."""

    def stream_ended(self, end: StreamEnd) -> None: ...

    def finish(self, exc: BaseException | None = None) -> None:
        """End the span (idempotent); an exception marks it as an error."""


NO_GENERATION = Generation()


class Telemetry:
    """No tracing: every hook is a no-op."""

    enabled = False

    def generation(self, call: ChatCall) -> Generation:
        return NO_GENERATION

    def span(self, name: str, attributes: dict[str, Any] | None = None) -> AbstractContextManager[None]:
        """A child span of the current one (scoring, the history write)."""
        return _NULL

    def score_call(self, *, session_id: str | None, source: str, texts: int) -> AbstractContextManager[None]:
        """The span of a /v1/score call, under which its evaluations are emitted."""
        return _NULL

    def evaluations(self, tone: dict[str, Any] | None, *, index: int | None = None) -> None:
        """One `gen_ai.evaluation.result` per tone dimension and one for the label, under the current span."""

    def drift_alarm(self, session_id: str, source: str, persona: str | None, report: Any) -> None: ...

    def instrument_http_client(self, client: httpx.AsyncClient) -> None:
        """Forward the current trace (`traceparent`) on this client's requests (gateway mode)."""

    async def shutdown(self) -> None: ...


NO_TELEMETRY = Telemetry()
# The telemetry of the request being served in this context (None: not traced). Set by the tracing middleware,
# inherited by the tasks that record a turn, read by `app.telemetry.drift_alarm`.
ACTIVE: ContextVar[Telemetry | None] = ContextVar("tonewatch_telemetry", default=None)
