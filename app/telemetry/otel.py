"""The OpenTelemetry SDK behind the telemetry seam: imported only when an OTLP endpoint is configured.

* Providers are this app's own (never the process-global ones), so several apps in one process (tests) and a host
  application's own tracing do not mix. Everything else is the SDK's reading of its variables: endpoint, headers,
  timeout, compression, OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*,
  OTEL_BLRP_*, OTEL_PROPAGATORS.
* Export happens on the batch processors' threads; a request only appends to a bounded queue. When the collector
  is down or slow the queue fills and further items are dropped and counted (`tonewatch_otel_dropped`), never
  waited for; failed exports are counted too (`tonewatch_otel_export_failures`).
* Evaluations are log-based events (a LogRecord with `event_name` = gen_ai.evaluation.result, the conventions'
  current form; the Events API is deprecated) when a logs endpoint is configured, correlated with the generation's
  span through the context; and the same attributes as span events on that span, which trace-only receivers
  (Jaeger, Tempo, Phoenix) display.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

import httpx
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from app.backends.base import ChatCall, Completed, StreamEnd
from app.metrics import Metrics
from app.services.history import redact
from app.telemetry import genai
from app.telemetry.base import ACTIVE, Generation, Telemetry
from app.telemetry.env import excluded_paths, logs_enabled, protocol
from app.telemetry.export import (
    BoundedLogProcessor,
    BoundedSpanProcessor,
    log_exporter,
    service_resource,
    span_exporter,
)

log = logging.getLogger("tonewatch.telemetry")
SCOPE = "tonewatch"
SHUTDOWN_WAIT_S = 3.0  # a dead collector must not hold up the server's shutdown
# The response id of the generation whose span is current (the evaluations' gen_ai.response.id).
_RESPONSE_ID: ContextVar[str | None] = ContextVar("tonewatch_response_id", default=None)
# The span evaluations belong to (the generation's, or a /v1/score call's), whatever child span is current.
_EVALUATED: ContextVar[Span | None] = ContextVar("tonewatch_evaluated_span", default=None)


# ---- the telemetry -------------------------------------------------------------------------------------------
class OtelTelemetry(Telemetry):
    enabled = True

    def __init__(
        self,
        metrics: Metrics,
        *,
        provider: str,
        redact_text: bool,
        capture: bool,
        server_address: str | None,
        env: Mapping[str, str],
    ):
        self.provider = provider
        self.capture = capture
        self.redact_text = redact_text
        self.excluded = set(excluded_paths(env))
        self.server: tuple[str, int | None] | None = None
        if server_address:
            parts = urlsplit(server_address)
            self.server = (parts.hostname or "", parts.port)
        resource = service_resource()
        self.tracer_provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER(_ARG)
        self.tracer_provider.add_span_processor(BoundedSpanProcessor(span_exporter(env), metrics, env))
        self.tracer = self.tracer_provider.get_tracer(SCOPE)
        self.logger_provider: LoggerProvider | None = None
        self.event_logger = None
        if logs_enabled(env):
            self.logger_provider = LoggerProvider(resource=resource)
            self.logger_provider.add_log_record_processor(BoundedLogProcessor(log_exporter(env), metrics, env))
            self.event_logger = self.logger_provider.get_logger(SCOPE)
        log.info(
            "OpenTelemetry export on (%s, evaluations as %s; message content %s)",
            protocol(env, "traces"),
            "log-based events" if self.event_logger else "span events",
            "captured" if capture else "not captured",
        )

    # ---- server spans (the ASGI middleware) -------------------------------------------------------------------
    async def handle_http(self, app: Any, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if path in self.excluded:
            return await app(scope, receive, send)
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
        parent = propagate.extract(carrier)
        method = scope.get("method", "GET")
        attrs: dict[str, Any] = {"http.request.method": method, "url.path": path, "url.scheme": scope.get("scheme")}
        if carrier.get("user-agent"):
            attrs["user_agent.original"] = carrier["user-agent"]
        client = scope.get("client")
        if client:
            attrs["client.address"] = client[0]
        span = self.tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attrs)
        state = scope.setdefault("state", {})  # shared with the inner middleware (request id, adapter label)
        status = {"code": 500}

        async def traced_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span, parent))
        active = ACTIVE.set(self)
        try:
            await app(scope, receive, traced_send)
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            ACTIVE.reset(active)
            otel_context.detach(token)
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status["code"])
            if state.get("request_id"):
                span.set_attribute("tonewatch.request_id", state["request_id"])
            if state.get("adapter_label"):
                span.set_attribute("tonewatch.adapter", state["adapter_label"])
            if status["code"] >= 500:
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", str(status["code"]))
            span.end()

    # ---- generations ------------------------------------------------------------------------------------------
    def generation(self, call: ChatCall) -> Generation:
        return _OtelGeneration(self, call)

    def clean(self, text: str) -> str:
        return redact(text) if self.redact_text else text

    @contextmanager
    def _child(self, name: str, attributes: dict[str, Any]) -> Iterator[None]:
        with self.tracer.start_as_current_span(name, attributes=attributes, record_exception=True):
            yield

    def span(self, name: str, attributes: dict[str, Any] | None = None) -> AbstractContextManager[None]:
        return self._child(name, attributes or {})

    def score_call(self, *, session_id: str | None, source: str, texts: int) -> AbstractContextManager[None]:
        attrs: dict[str, Any] = {"tonewatch.source": source, "tonewatch.texts": texts}
        if session_id:
            attrs["gen_ai.conversation.id"] = session_id
        return self._evaluated("tonewatch.score_texts", attrs)

    @contextmanager
    def _evaluated(self, name: str, attributes: dict[str, Any]) -> Iterator[None]:
        with self.tracer.start_as_current_span(name, attributes=attributes, record_exception=True) as span:
            token = _EVALUATED.set(span)
            try:
                yield
            finally:
                _EVALUATED.reset(token)

    # ---- events -----------------------------------------------------------------------------------------------
    def _emit(self, span: Span, attributes: dict[str, Any]) -> None:
        # One form per event (each costs ~30-60 µs of SDK work plus its encoding, 5 per scored text): log-based, the
        # conventions' current form, when logs are exported; else a span event, which trace-only receivers show.
        if self.event_logger is None:
            span.add_event(genai.EVALUATION_EVENT, attributes=attributes)
        else:
            self.event_logger.emit(
                event_name=genai.EVALUATION_EVENT,
                severity_number=SeverityNumber.INFO,
                attributes=attributes,
                context=trace.set_span_in_context(span),
            )

    def evaluations(self, tone: dict[str, Any] | None, *, index: int | None = None) -> None:
        span = _EVALUATED.get() or trace.get_current_span()
        if tone is None or not span.is_recording():
            return
        response_id = _RESPONSE_ID.get(None)
        for attributes in genai.evaluation_attributes(tone, response_id=response_id, index=index):
            self._emit(span, dict(attributes))

    def drift_alarm(self, session_id: str, source: str, persona: str | None, report: Any) -> None:
        span = _EVALUATED.get() or trace.get_current_span()
        if span.is_recording():
            self._emit(span, dict(genai.drift_attributes(session_id, source, persona, report)))

    # ---- gateway ----------------------------------------------------------------------------------------------
    def instrument_http_client(self, client: httpx.AsyncClient) -> None:
        async def inject(request: httpx.Request) -> None:
            propagate.inject(request.headers)

        client.event_hooks["request"] = [*client.event_hooks.get("request", []), inject]

    async def shutdown(self) -> None:
        def close() -> None:
            self.tracer_provider.shutdown()
            if self.logger_provider is not None:
                self.logger_provider.shutdown()

        try:
            await asyncio.wait_for(asyncio.to_thread(close), SHUTDOWN_WAIT_S)
        except TimeoutError:
            log.warning("OpenTelemetry exporters did not flush within %.0f s; the rest is dropped", SHUTDOWN_WAIT_S)


class _OtelGeneration(Generation):
    def __init__(self, telemetry: OtelTelemetry, call: ChatCall):
        self.telemetry = telemetry
        self.call = call
        self.response_id = call.request_id
        self.first_chunk = True
        self.ended = False
        kind = SpanKind.CLIENT if telemetry.server else SpanKind.INTERNAL
        attrs: dict[str, Any] = dict(genai.request_attributes(call, telemetry.provider))
        if telemetry.server:
            host, port = telemetry.server
            attrs["server.address"] = host
            if port:
                attrs["server.port"] = port
        if telemetry.capture:
            attrs["gen_ai.input.messages"] = genai.input_messages(call, telemetry.clean)
        self.span = telemetry.tracer.start_span(genai.span_name(call), kind=kind, attributes=attrs)
        self._entered: list[AbstractContextManager[None]] = []

    @contextmanager
    def _active(self) -> Iterator[None]:
        token = otel_context.attach(trace.set_span_in_context(self.span))
        response = _RESPONSE_ID.set(self.response_id)
        evaluated = _EVALUATED.set(self.span)
        try:
            yield
        finally:
            _EVALUATED.reset(evaluated)
            _RESPONSE_ID.reset(response)
            otel_context.detach(token)

    def activate(self) -> AbstractContextManager[None]:
        return self._active()

    def __enter__(self) -> Generation:
        activation = self._active()
        activation.__enter__()
        self._entered.append(activation)
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        self._entered.pop().__exit__(kind, exc, tb)
        self.finish(exc)

    def _served(self) -> None:
        served = self.call.served
        self.span.set_attribute("gen_ai.response.model", served.model)
        if served.adapter:
            self.span.set_attribute("tonewatch.adapter", served.adapter)

    def chunk(self, payload: dict[str, Any] | bytes) -> None:
        if isinstance(payload, bytes):
            if not self.first_chunk and b'"usage"' not in payload:
                return
            try:
                data = json.loads(payload)
            except ValueError:
                return
            if not isinstance(data, dict):
                return
        else:
            data = payload
        if self.first_chunk:
            self.first_chunk = False
            if isinstance(data.get("id"), str):
                self.response_id = data["id"]
                self.span.set_attribute("gen_ai.response.id", data["id"])
        if data.get("usage"):
            self.span.set_attributes(genai.usage_attributes(data["usage"]))

    def completed(self, done: Completed) -> None:
        self._served()
        attrs = genai.body_attributes(done.body)
        attrs.update(genai.latency_attributes(done.latency))
        attrs.update(genai.usage_attributes(done.body.get("usage")))
        if "gen_ai.response.finish_reasons" not in attrs:
            attrs["gen_ai.response.finish_reasons"] = [done.finish_reason]
        if isinstance(attrs.get("gen_ai.response.id"), str):
            self.response_id = str(attrs["gen_ai.response.id"])
        _RESPONSE_ID.set(self.response_id)  # inside the activation: the evaluations that follow carry it
        self.span.set_attributes(attrs)
        self._queue_span(done.latency)
        if self.telemetry.capture:
            self.span.set_attribute(
                "gen_ai.output.messages", genai.output_messages(done.text, done.finish_reason, self.telemetry.clean)
            )

    def stream_ended(self, end: StreamEnd) -> None:
        self._served()
        attrs = genai.latency_attributes(end.latency)
        attrs["gen_ai.response.finish_reasons"] = [end.finish_reason]
        if not self.first_chunk or "gen_ai.response.id" not in attrs:
            attrs["gen_ai.response.id"] = self.response_id
        for chunk in end.trailer:
            if chunk.get("usage"):
                attrs.update(genai.usage_attributes(chunk["usage"]))
        self.span.set_attributes(attrs)
        self._queue_span(end.latency)
        if self.telemetry.capture:
            self.span.set_attribute(
                "gen_ai.output.messages", genai.output_messages(end.text, end.finish_reason, self.telemetry.clean)
            )

    def _queue_span(self, latency: dict[str, float]) -> None:
        """The engine's queue wait as a child span at the start of the generation (measured by the engine)."""
        queue_s = latency.get("queue_s")
        if not queue_s:
            return
        start = self.span.start_time if isinstance(self.span, ReadableSpan) else None
        if start is None:
            return
        child = self.telemetry.tracer.start_span(
            "tonewatch.queue_wait", context=trace.set_span_in_context(self.span), start_time=start
        )
        child.end(end_time=start + int(queue_s * 1e9))

    def finish(self, exc: BaseException | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):  # the client went away
            self.span.set_status(Status(StatusCode.ERROR, "cancelled by the client"))
            self.span.set_attribute("error.type", "cancelled")
        elif exc is not None:
            self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            self.span.set_attribute("error.type", type(exc).__qualname__)
            self.span.record_exception(exc)
        self.span.end()
