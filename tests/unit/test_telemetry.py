"""The telemetry seam without a server: which OTEL_* settings turn export on, the GenAI/evaluation attribute shapes,
no SDK import when off, and a stuck collector that fills the export queue (drops counted, never waited for)."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from app.telemetry import NO_TELEMETRY, build_telemetry
from app.telemetry.env import capture_content, enabled_by_env, excluded_paths, logs_enabled, protocol
from app.telemetry.genai import drift_attributes, evaluation_attributes

TONE = {
    "label": "friendly",
    "probs": {"friendly": 0.8, "formal": 0.2},
    "formality": 0.31,
    "politeness": 0.77,
    "warmth": 0.9,
    "persona": "support-friendly",
    "persona_distance": 0.42,
    "persona_match": True,
}


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    ],
)
def test_only_an_otlp_endpoint_turns_export_on(env, on):
    assert enabled_by_env(env) is on


def test_logs_content_protocol_and_exclusions_follow_the_standard_variables():
    assert not logs_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/v1/traces"})
    assert logs_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"})
    assert not logs_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_LOGS_EXPORTER": "none"})
    assert not capture_content({}) and capture_content({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "True"})
    assert protocol({}, "traces") == "http/protobuf"
    assert protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "traces") == "grpc"
    mixed = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf"}
    assert protocol(mixed, "logs") == "http/protobuf"
    with pytest.raises(ValueError, match="http/json"):
        protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "traces")
    assert "/healthz" in excluded_paths({}) and excluded_paths({"OTEL_PYTHON_EXCLUDED_URLS": "/a, /b"}) == ("/a", "/b")


def test_off_means_the_no_op_and_no_sdk_import():
    from app.metrics import Metrics

    assert build_telemetry(Metrics(), provider="tonewatch", redact_text=False, env={}) is NO_TELEMETRY
    code = (
        "import sys, app.main, app.telemetry; from app.metrics import Metrics; "
        "t = app.telemetry.build_telemetry(Metrics(), provider='x', redact_text=False, env={}); "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.sdk._logs', "
        "'opentelemetry.exporter', 'grpc', 'app.telemetry.otel'))))"
    )  # (redis-py imports opentelemetry.sdk.metrics for its own observability when the SDK is installed)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_one_evaluation_per_dimension_persona_distance_and_label():
    events = evaluation_attributes(TONE, response_id="chatcmpl-1")
    by_name = {e["gen_ai.evaluation.name"]: e for e in events}
    assert list(by_name) == ["formality", "politeness", "warmth", "persona_distance", "tone"]
    assert by_name["warmth"]["gen_ai.evaluation.score.value"] == 0.9
    assert by_name["persona_distance"]["gen_ai.evaluation.score.label"] == "match"
    assert by_name["tone"]["gen_ai.evaluation.score.label"] == "friendly"
    assert by_name["tone"]["gen_ai.evaluation.score.value"] == 0.8
    assert all(e["gen_ai.response.id"] == "chatcmpl-1" for e in events)
    unjudged = {k: v for k, v in TONE.items() if not k.startswith("persona")}
    assert [e["gen_ai.evaluation.name"] for e in evaluation_attributes(unjudged, index=3)] == [
        "formality",
        "politeness",
        "warmth",
        "tone",
    ]
    assert all(e["tonewatch.text.index"] == 3 for e in evaluation_attributes(unjudged, index=3))


def test_drift_alarm_is_an_evaluation_of_the_session():
    from app.monitor.drift import DriftReport

    report = DriftReport(score=2.5, alert=True, detector="cusum", cusum=5.1, threshold=4.0, dispersion=1.0, turns=7)
    attrs = drift_attributes("s-1", "vendor-bot", "support-friendly", report)
    assert attrs["gen_ai.evaluation.name"] == "tone_drift" and attrs["gen_ai.evaluation.score.label"] == "alarm"
    assert attrs["gen_ai.conversation.id"] == "s-1" and attrs["gen_ai.evaluation.score.value"] == 2.5
    assert "cusum" in str(attrs["gen_ai.evaluation.explanation"])


def test_a_stuck_collector_fills_the_queue_and_drops_are_counted_not_waited_for():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from app.metrics import Metrics
    from app.telemetry.export import BoundedSpanProcessor

    release = threading.Event()
    exported: list[int] = []

    class Stuck(SpanExporter):
        def export(self, spans):
            release.wait(30)  # a collector that does not answer
            exported.append(len(spans))
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

    metrics = Metrics()
    limit = 4
    processor = BoundedSpanProcessor(Stuck(), metrics, {"OTEL_BSP_MAX_QUEUE_SIZE": str(limit)})
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for i in range(50):
        tracer.start_span(f"s{i}").end()  # never blocks on the exporter
    dropped = metrics.otel_dropped.labels("traces")._value.get()
    # at most the queue plus one batch in the stuck export were admitted; the rest were counted as dropped
    assert 50 - 2 * limit <= dropped <= 50 - limit
    release.set()
    provider.shutdown()
    assert sum(exported) == 50 - dropped  # everything admitted was delivered once the collector came back
