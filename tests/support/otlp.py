"""A real OTLP receiver on loopback for the tests: over HTTP it accepts what the SDK's exporters POST to /v1/traces
and /v1/logs; over gRPC (``start_grpc``) it serves the collector's TraceService/LogsService (opentelemetry-proto's
generated stubs on a grpcio server). Either way it decodes the protobuf (ExportTraceServiceRequest /
ExportLogsServiceRequest) and keeps flattened spans and log records to assert on. `delay_s` makes it a slow
collector."""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def attributes_of(pairs) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in pairs}


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    status_code: int
    start_ns: int
    end_ns: int


@dataclass
class LogEvent:
    event_name: str
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass
class Receiver:
    delay_s: float = 0.0
    spans: list[Span] = field(default_factory=list)
    logs: list[LogEvent] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # every decoded request body, to search for leaked text
    lock: threading.RLock = field(default_factory=threading.RLock)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                if self.path == "/v1/traces":
                    receiver._traces(body)
                elif self.path == "/v1/logs":
                    receiver._logs(body)
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def start_grpc(self) -> Receiver:
        """The same receiver as an OTLP/gRPC endpoint (``url`` is http://127.0.0.1:PORT, as OTEL_* wants it)."""
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # the service method's name
                receiver._traces(request.SerializeToString())
                return trace_service_pb2.ExportTraceServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):
                receiver._logs(request.SerializeToString())
                return logs_service_pb2.ExportLogsServiceResponse()

        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.grpc_server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self.grpc_server)
        self.port = self.grpc_server.add_insecure_port("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_server.start()
        return self

    def stop(self) -> None:
        if getattr(self, "grpc_server", None) is not None:
            self.grpc_server.stop(grace=None)
            return
        self.server.shutdown()
        self.server.server_close()

    def _traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = attributes_of(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    spans.append(
                        Span(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            attributes=attributes_of(s.attributes),
                            events=[(e.name, attributes_of(e.attributes)) for e in s.events],
                            resource=resource,
                            status_code=s.status.code,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                        )
                    )
        with self.lock:
            self.spans.extend(spans)
            self.raw.append(body)

    def _logs(self, body: bytes) -> None:
        request = ExportLogsServiceRequest()
        request.ParseFromString(body)
        records = [
            LogEvent(
                event_name=r.event_name,
                trace_id=r.trace_id.hex(),
                span_id=r.span_id.hex(),
                attributes=attributes_of(r.attributes),
            )
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for r in scope_logs.log_records
        ]
        with self.lock:
            self.logs.extend(records)
            self.raw.append(body)

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "spans") -> Any:
        """Poll until predicate(receiver) is truthy (a hang guard, not a speed assertion)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = predicate(self)
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"the receiver did not get the expected {what} within {timeout} s")

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]
