"""OpenTelemetry tracing in the GenAI semantic conventions, opt-in by the standard `OTEL_*` variables only.

Nothing here imports OpenTelemetry: with no OTLP endpoint configured the app gets `NO_TELEMETRY`, whose methods do
nothing, and the SDK and its exporters are never imported. `build_telemetry` imports `app.telemetry.otel` (the SDK
wiring) only when `enabled_by_env` says so.

The hooks the services call are the `Telemetry` methods (see `app.telemetry.base`); HistoryService, whose drift
report decides an alarm's onset, calls the module function `drift_alarm` instead, which finds the request's
telemetry through a context variable (set by the tracing middleware, inherited by the recording tasks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from app.telemetry.base import ACTIVE, NO_TELEMETRY, Generation, Telemetry
from app.telemetry.env import capture_content, enabled_by_env

if TYPE_CHECKING:
    from app.metrics import Metrics

__all__ = [
    "NO_TELEMETRY",
    "Generation",
    "Telemetry",
    "build_telemetry",
    "capture_content",
    "drift_alarm",
    "enabled_by_env",
]


def build_telemetry(
    metrics: Metrics,
    *,
    provider: str,
    redact_text: bool,
    server_address: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Telemetry:
    """The real thing when `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` is set (and the SDK is not disabled), else the
    no-op. `provider` is the `gen_ai.provider.name` of generations (tonewatch, or the upstream's name)."""
    import os

    env = os.environ if env is None else env
    if not enabled_by_env(env):
        return NO_TELEMETRY
    from app.telemetry.otel import OtelTelemetry

    return OtelTelemetry(
        metrics,
        provider=provider,
        redact_text=redact_text,
        capture=capture_content(env),
        server_address=server_address,
        env=env,
    )


def drift_alarm(session_id: str, source: str, persona: str | None, report: Any) -> None:
    """A session's drift detector just raised its alarm (it was not in alarm before): one event under the current
    span. A no-op unless a traced request is being served in this context."""
    telemetry = ACTIVE.get()
    if telemetry is not None:
        telemetry.drift_alarm(session_id, source, persona, report)
