"""Which standard OpenTelemetry variables turn tracing on (pure: reads a mapping, imports nothing)."""

from __future__ import annotations

from collections.abc import Mapping

TRUE = {"true", "1", "yes", "on"}
# probes and scrapes would be most of the spans and tell nothing; OTEL_PYTHON_EXCLUDED_URLS replaces this list
DEFAULT_EXCLUDED_PATHS = ("/healthz", "/readyz", "/metrics")


def _set(env: Mapping[str, str], name: str) -> bool:
    return bool(env.get(name, "").strip())


def enabled_by_env(env: Mapping[str, str]) -> bool:
    """Traces are exported when an OTLP endpoint for them is configured, the SDK is not disabled and the traces
    exporter is not `none`; anything else (the default) is no tracing at all."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() in TRUE:
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return _set(env, "OTEL_EXPORTER_OTLP_ENDPOINT") or _set(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def logs_enabled(env: Mapping[str, str]) -> bool:
    """Log-based events (the conventions' current form) need a logs endpoint: the common one or the logs one. With
    only a traces endpoint the evaluations still travel, as span events on the generation's span."""
    if env.get("OTEL_LOGS_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return _set(env, "OTEL_EXPORTER_OTLP_ENDPOINT") or _set(env, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")


def capture_content(env: Mapping[str, str]) -> bool:
    """Prompt and answer text go into spans only with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true."""
    return env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().lower() in TRUE


def protocol(env: Mapping[str, str], signal: str) -> str:
    """OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf (the spec's
    default). grpc and http/protobuf are served; anything else is refused at start-up."""
    value = (
        env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip() or "http/protobuf"
    if value not in ("http/protobuf", "grpc"):
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={value!r}: Tonewatch exports http/protobuf or grpc")
    return value


def excluded_paths(env: Mapping[str, str]) -> tuple[str, ...]:
    """Paths that get no server span (OTEL_PYTHON_EXCLUDED_URLS, comma-separated, as the Python instrumentations
    read it; exact paths here)."""
    given = env.get("OTEL_PYTHON_EXCLUDED_URLS")
    if given is None:
        return DEFAULT_EXCLUDED_PATHS
    return tuple(p.strip() for p in given.split(",") if p.strip())


def queue_size(env: Mapping[str, str], name: str, default: int = 2048) -> int:
    try:
        value = int(env.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default
