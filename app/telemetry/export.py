"""Export for the OpenTelemetry SDK: OTLP exporters by protocol, batch processors in front of a bounded queue whose
drops are counted instead of waited for, and the resource. Imported only with the SDK (app/telemetry/otel.py)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from app.metrics import Metrics
from app.telemetry.env import protocol, queue_size


# bounded export with counted drops ---------------------------------------------------------------------
class _Gate:
    """Items handed to a batch processor and not yet taken by its exporter. The SDK's queue silently drops the
    oldest item when full; admitting at most its size here means the SDK never drops and every drop is counted."""

    def __init__(self, limit: int, dropped: Any):
        self.limit = limit
        self.dropped = dropped
        self.pending = 0
        self.lock = threading.Lock()

    def admit(self) -> bool:
        with self.lock:
            if self.pending >= self.limit:
                full = True
            else:
                self.pending += 1
                full = False
        if full:
            self.dropped.inc()
        return not full

    def taken(self, count: int) -> None:
        with self.lock:
            self.pending = max(0, self.pending - count)


class _CountingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, gate: _Gate, failures: Any):
        self.inner, self.gate, self.failures = inner, gate, failures

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.gate.taken(len(spans))
        result = self.inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self.failures.inc(len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class BoundedSpanProcessor(SpanProcessor):
    def __init__(self, exporter: SpanExporter, metrics: Metrics, env: Mapping[str, str]):
        limit = queue_size(env, "OTEL_BSP_MAX_QUEUE_SIZE")
        self.gate = _Gate(limit, metrics.otel_dropped.labels("traces"))
        counted = _CountingSpanExporter(exporter, self.gate, metrics.otel_export_failures.labels("traces"))
        batch = min(queue_size(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), limit)
        self.inner = BatchSpanProcessor(counted, max_queue_size=limit, max_export_batch_size=batch)

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled and self.gate.admit():
            self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _CountingLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, gate: _Gate, failures: Any):
        self.inner, self.gate, self.failures = inner, gate, failures

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        self.gate.taken(len(batch))
        result = self.inner.export(batch)
        if result is not LogRecordExportResult.SUCCESS:
            self.failures.inc(len(batch))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class BoundedLogProcessor(LogRecordProcessor):
    def __init__(self, exporter: LogRecordExporter, metrics: Metrics, env: Mapping[str, str]):
        limit = queue_size(env, "OTEL_BLRP_MAX_QUEUE_SIZE")
        self.gate = _Gate(limit, metrics.otel_dropped.labels("logs"))
        counted = _CountingLogExporter(exporter, self.gate, metrics.otel_export_failures.labels("logs"))
        batch = min(queue_size(env, "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 512), limit)
        self.inner = BatchLogRecordProcessor(counted, max_queue_size=limit, max_export_batch_size=batch)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if self.gate.admit():
            self.inner.on_emit(log_record)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def span_exporter(env: Mapping[str, str]) -> SpanExporter:
    if protocol(env, "traces") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def log_exporter(env: Mapping[str, str]) -> LogRecordExporter:
    if protocol(env, "logs") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter

        return GrpcLogExporter()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter()


def service_resource() -> Resource:
    """The SDK's own resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, the SDK's attributes), named
    `tonewatch` where the environment names no service."""
    resource = Resource.create({})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            release = version("tonewatch")
        except PackageNotFoundError:
            release = "unknown"
        resource = resource.merge(Resource({SERVICE_NAME: "tonewatch", SERVICE_VERSION: release}))
    return resource
