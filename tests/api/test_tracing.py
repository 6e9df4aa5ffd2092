"""OpenTelemetry export through the real app into a real OTLP/HTTP receiver (tests/support/otlp.py decodes the
protobuf the SDK's exporters send): the caller's trace continued, the GenAI span and its attributes, tone as
`gen_ai.evaluation.result` events (log-based events with a logs endpoint, span events with only a traces one), the
drift alarm's onset, content capture off
by default and redacted when on, traceparent forwarded to an upstream, and a dead collector changing nothing."""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.support.otlp import Receiver, Span

SERVER, INTERNAL, CLIENT = 2, 1, 3  # OTLP SpanKind values
EVALUATION = "gen_ai.evaluation.result"
SECRET_PROMPT = "my card is 4111 1111 1111 1111, mail me at jo@example.com"
FRIENDLY = [
    "Thanks so much for reaching out! I'm really happy to help you sort this out today.",
    "Oh no, I'm so sorry about that! Let me fix it for you right away.",
    "Great news, your refund is on its way! Thanks for your patience, it means a lot.",
    "No worries at all! I've updated your address, and you're all set.",
]
ROBOTIC = [
    "Request received. Ticket 4411 closed.",
    "Refund denied. Policy 7.2.",
    "Address updated. No further action.",
    "Invalid input. Resubmit form.",
    "Order cancelled. Status: final.",
    "Account locked. Contact admin.",
]


def otel_env(monkeypatch: pytest.MonkeyPatch, endpoint: str, **extra: str) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "tonewatch-under-test")
    for name, value in extra.items():
        monkeypatch.setenv(name, value)


def traceparent() -> tuple[str, str, dict[str, str]]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, {"traceparent": f"00-{trace_id}-{parent}-01"}


def evaluation_events(receiver: Receiver, span: Span, at_least: int = 1) -> list[dict[str, Any]]:
    """The log-based evaluation events correlated with ``span`` (the form with a logs endpoint), once ``at_least``
    have arrived; none of them doubles as a span event."""
    assert not [name for name, _ in span.events if name == EVALUATION]
    logs = receiver.wait_for(
        lambda r: (
            (e := [x for x in r.logs if x.span_id == span.span_id and x.event_name == EVALUATION])
            and len(e) >= at_least
            and e
        ),
        what=f"{at_least} evaluation events",
    )
    assert {e.trace_id for e in logs} == {span.trace_id}
    return [e.attributes for e in logs]


def evaluations(receiver: Receiver, span: Span, at_least: int = 1) -> dict[str, dict[str, Any]]:
    return {a["gen_ai.evaluation.name"]: a for a in evaluation_events(receiver, span, at_least)}


def spans_of(receiver: Receiver, trace_id: str, count: int) -> list[Span]:
    return receiver.wait_for(lambda r: (s := r.trace(trace_id)) and len(s) >= count and s, what=f"{count} spans")


def with_names(receiver: Receiver, trace_id: str, *starts: str) -> list[Span]:
    """The trace's spans once one starting with each of ``starts`` has arrived (spans are exported as they end, the
    server span last, so a count alone can return before it)."""
    return receiver.wait_for(
        lambda r: (s := r.trace(trace_id)) and all(any(x.name.startswith(n) for x in s) for n in starts) and s,
        what=f"spans {starts}",
    )


def one(spans: list[Span], name_start: str) -> Span:
    [span] = [s for s in spans if s.name.startswith(name_start)]
    return span


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def embedded(receiver, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracing")
    with pytest.MonkeyPatch.context() as mp:
        otel_env(mp, receiver.url)
        settings = Settings(db_path=tmp / "tw.db", adapter_root=tmp / "adapters", max_new_tokens=16)
        with TestClient(create_app(settings)) as client:
            yield client


def test_chat_continues_the_callers_trace_with_genai_attributes_and_evaluations(embedded, receiver):
    trace_id, parent, headers = traceparent()
    body = {
        "messages": [{"role": "user", "content": SECRET_PROMPT}],
        "max_tokens": 6,
        "temperature": 0,
        "session_id": "trace-chat-1",
        "persona": "support-friendly",
    }
    r = embedded.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200, r.text
    answer = r.json()
    spans = spans_of(receiver, trace_id, 5)  # server, chat, queue wait, scoring, history write
    server = one(spans, "POST /v1/chat/completions")
    assert server.kind == SERVER and server.parent_span_id == parent
    assert server.attributes["http.response.status_code"] == 200
    assert server.resource["service.name"] == "tonewatch-under-test"
    chat = one(spans, "chat ")
    assert chat.parent_span_id == server.span_id and chat.kind == INTERNAL
    a = chat.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "tonewatch"
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == answer["model"]
    assert a["gen_ai.response.id"] == answer["id"]
    assert a["gen_ai.conversation.id"] == "trace-chat-1"
    assert a["gen_ai.request.max_tokens"] == 6 and a["gen_ai.request.temperature"] == 0
    assert a["gen_ai.response.finish_reasons"] == [answer["choices"][0]["finish_reason"]]
    assert a["gen_ai.usage.input_tokens"] == answer["usage"]["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == answer["usage"]["completion_tokens"]
    assert a["gen_ai.response.time_to_first_chunk"] >= 0 and a["tonewatch.queue_wait_s"] >= 0
    children = {s.name for s in spans if s.parent_span_id == chat.span_id}
    assert {"tonewatch.tone_score", "tonewatch.history.write"} <= children
    evals = evaluations(receiver, chat, 5)  # log-based events, correlated with the chat span through the context
    tone = answer["tone"]
    assert set(evals) == {"formality", "politeness", "warmth", "persona_distance", "tone"}
    for dimension in ("formality", "politeness", "warmth", "persona_distance"):
        assert evals[dimension]["gen_ai.evaluation.score.value"] == pytest.approx(tone[dimension])
        assert evals[dimension]["gen_ai.response.id"] == answer["id"]
    assert evals["tone"]["gen_ai.evaluation.score.label"] == tone["label"]
    assert evals["persona_distance"]["gen_ai.evaluation.score.label"] == (
        "match" if tone["persona_match"] else "mismatch"
    )
    # content capture is off: the prompt and the answer text never leave
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
    exported = b"".join(receiver.raw)
    assert b"4111" not in exported and b"jo@example.com" not in exported


def test_streamed_chat_completion_and_responses_get_their_spans(embedded, receiver):
    trace_id, _, headers = traceparent()
    # greedy: a sampled answer can be blank, and a blank answer is not scored (one span fewer)
    body = {
        "messages": [{"role": "user", "content": "Hi!"}],
        "max_tokens": 4,
        "stream": True,
        "session_id": "trace-s",
        "temperature": 0,
    }
    with embedded.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: {")]
    first_id = json.loads(lines[0][6:])["id"]
    completion = embedded.post(
        "/v1/completions", json={"prompt": "Once upon", "max_tokens": 3, "temperature": 0}, headers=headers
    )
    assert completion.status_code == 200
    response = embedded.post(
        "/v1/responses", json={"input": "Hello", "max_output_tokens": 3, "temperature": 0}, headers=headers
    )
    assert response.status_code == 200
    spans = spans_of(receiver, trace_id, 13)  # stream: 5 (with a session), completion: 4, response: 4
    stream_span = [s for s in spans if s.attributes.get("gen_ai.request.stream")]
    assert len(stream_span) == 1 and stream_span[0].name.startswith("chat ")
    assert stream_span[0].attributes["gen_ai.response.id"] == first_id
    assert stream_span[0].attributes["gen_ai.conversation.id"] == "trace-s"
    assert {"formality", "politeness", "warmth", "tone"} <= set(evaluations(receiver, stream_span[0], 4))
    text = one(spans, "text_completion ")
    assert text.attributes["gen_ai.operation.name"] == "text_completion"
    assert text.attributes["gen_ai.response.id"] == completion.json()["id"]
    assert "tone" in evaluations(receiver, text, 4)
    kinds = {s.attributes.get("tonewatch.request.kind") for s in spans if s.name.startswith("chat ")}
    assert kinds == {"chat", "response"}


def test_score_calls_emit_evaluations_and_the_drift_alarm_onset(embedded, receiver):
    trace_id, _, headers = traceparent()
    texts = FRIENDLY + ROBOTIC
    body = {"texts": texts, "persona": "support-friendly", "session_id": "trace-drift-1", "adapter": "vendor-bot"}
    r = embedded.post("/v1/score", json=body, headers=headers)
    assert r.status_code == 200
    results = r.json()["results"]
    assert any(x["drift"]["alert"] for x in results)
    spans = with_names(receiver, trace_id, "tonewatch.score_texts")
    call = one(spans, "tonewatch.score_texts")
    assert call.attributes["gen_ai.conversation.id"] == "trace-drift-1"
    events = evaluation_events(receiver, call, 4 * len(texts) + 1)
    labels = sorted(
        (a for a in events if a["gen_ai.evaluation.name"] == "tone"), key=lambda a: a["tonewatch.text.index"]
    )
    assert [a["tonewatch.text.index"] for a in labels] == list(range(len(texts)))
    assert [a["gen_ai.evaluation.score.label"] for a in labels] == [x["label"] for x in results]
    [alarm] = [a for a in events if a["gen_ai.evaluation.name"] == "tone_drift"]  # the onset only, once
    assert alarm["gen_ai.evaluation.score.label"] == "alarm"
    assert alarm["gen_ai.conversation.id"] == "trace-drift-1"


def test_untraced_requests_start_a_trace_and_probes_get_none(embedded, receiver):
    before = len(receiver.spans)
    assert embedded.get("/healthz").status_code == 200
    r = embedded.post("/v1/score", json={"texts": ["Thanks a lot!"]})
    assert r.status_code == 200
    request_id = r.headers["x-request-id"]
    server = receiver.wait_for(
        lambda rec: [s for s in rec.spans if s.attributes.get("tonewatch.request_id") == request_id], what="span"
    )[0]
    assert server.parent_span_id == "" and server.name == "POST /v1/score"
    assert not any(s.attributes.get("url.path") == "/healthz" for s in receiver.spans[before:])


# ---- gateway: an upstream that records what it was sent --------------------------------------------------------
class Upstream:
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _json(self, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._json({"object": "list", "data": [{"id": "up-model", "object": "model"}]})

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["content-length"])))
                upstream.headers.append({k.lower(): v for k, v in self.headers.items()})
                text = "Thank you so much for asking! I'm happy to help, write to help@example.com."
                if request.get("stream"):
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("connection", "close")
                    self.end_headers()
                    for chunk in (
                        {"id": "up-stream-1", "choices": [{"index": 0, "delta": {"content": text}}]},
                        {"id": "up-stream-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                    ):
                        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.close_connection = True
                    return
                self._json(
                    {
                        "id": "up-chat-1",
                        "object": "chat.completion",
                        "model": "up-model",
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 17, "total_tokens": 28},
                    }
                )

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def gateway(receiver, tmp_path_factory):
    """Gateway mode (no local LM), content capture on, history redaction on."""
    upstream = Upstream()
    tmp = tmp_path_factory.mktemp("tracing-gw")
    with pytest.MonkeyPatch.context() as mp:
        otel_env(mp, receiver.url, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")
        settings = Settings(
            db_path=tmp / "gw.db", adapter_root=tmp / "adapters", upstream_url=upstream.url, history_redact=True
        )
        with TestClient(create_app(settings)) as client:
            yield client, upstream
    upstream.server.shutdown()


def test_gateway_forwards_the_trace_to_the_upstream(gateway, receiver):
    client, upstream = gateway
    trace_id, _, headers = traceparent()
    body = {"model": "up-model", "messages": [{"role": "user", "content": SECRET_PROMPT}], "session_id": "gw-trace"}
    r = client.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200, r.text
    sent = upstream.headers[-1]["traceparent"].split("-")
    spans = with_names(receiver, trace_id, "chat up-model")
    chat = one(spans, "chat up-model")
    assert chat.kind == CLIENT and sent[1] == trace_id and sent[2] == chat.span_id  # the engine's parent
    a = chat.attributes
    assert a["gen_ai.response.id"] == "up-chat-1" and a["gen_ai.response.model"] == "up-model"
    assert a["gen_ai.usage.input_tokens"] == 11 and a["gen_ai.usage.output_tokens"] == 17
    assert a["gen_ai.provider.name"] == "upstream" and a["server.address"] == "127.0.0.1"
    assert {"formality", "politeness", "warmth", "tone"} <= set(evaluations(receiver, chat, 4))
    # capture on: the messages travel, through the history redaction (on here)
    [message] = json.loads(a["gen_ai.input.messages"])
    assert message["role"] == "user" and "[number]" in message["parts"][0]["content"]
    assert "4111" not in a["gen_ai.input.messages"] and "jo@example.com" not in a["gen_ai.input.messages"]
    [output] = json.loads(a["gen_ai.output.messages"])
    assert output["finish_reason"] == "stop" and "[email]" in output["parts"][0]["content"]


def test_gateway_stream_relay_is_traced(gateway, receiver):
    client, upstream = gateway
    trace_id, _, headers = traceparent()
    body = {"model": "up-model", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        assert any("tone" in line for line in r.iter_lines())
    assert upstream.headers[-1]["traceparent"].split("-")[1] == trace_id
    chat = one(with_names(receiver, trace_id, "chat up-model"), "chat up-model")
    assert chat.attributes["gen_ai.response.id"] == "up-stream-1"
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert "tone" in evaluations(receiver, chat, 4)


def test_a_dead_collector_changes_nothing_for_requests(tmp_path, monkeypatch):
    """Nothing listens at the endpoint: every export fails on the exporter's thread, requests are served as usual,
    and shutting down does not wait for the collector."""
    from tests.support.servers import free_port

    otel_env(monkeypatch, f"http://127.0.0.1:{free_port()}", OTEL_EXPORTER_OTLP_TIMEOUT="1")
    settings = Settings(db_path=tmp_path / "tw.db", adapter_root=tmp_path / "adapters", upstream_url=Upstream().url)
    with TestClient(create_app(settings)) as client:
        for _ in range(3):
            r = client.post("/v1/score", json={"texts": ["Thanks so much, happy to help!"], "session_id": "dead-1"})
            assert r.status_code == 200 and r.json()["results"][0]["label"]
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 200 and r.json()["tone"]


def test_the_grpc_exporter_delivers_the_same_trace_and_evaluations(tmp_path, monkeypatch):
    """OTEL_EXPORTER_OTLP_PROTOCOL=grpc against a real OTLP/gRPC receiver: the caller's trace continued, the score
    call's evaluations as log-based events, a relayed chat completion's GenAI span."""
    grpc_receiver = Receiver().start_grpc()
    try:
        otel_env(monkeypatch, grpc_receiver.url, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
        settings = Settings(db_path=tmp_path / "tw.db", adapter_root=tmp_path / "adapters", upstream_url=Upstream().url)
        with TestClient(create_app(settings)) as client:
            trace_id, parent, headers = traceparent()
            body = {"texts": FRIENDLY[:2], "persona": "support-friendly", "session_id": "grpc-1"}
            r = client.post("/v1/score", json=body, headers=headers)
            assert r.status_code == 200
            spans = with_names(grpc_receiver, trace_id, "POST /v1/score", "tonewatch.score_texts")
            assert one(spans, "POST /v1/score").parent_span_id == parent
            call = one(spans, "tonewatch.score_texts")
            events = evaluation_events(grpc_receiver, call, 8)
            labels = sorted(
                (a for a in events if a["gen_ai.evaluation.name"] == "tone"), key=lambda a: a["tonewatch.text.index"]
            )
            assert [a["gen_ai.evaluation.score.label"] for a in labels] == [x["label"] for x in r.json()["results"]]
            chat_trace, _, headers = traceparent()
            r = client.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]}, headers=headers
            )
            assert r.status_code == 200
            chat = one(with_names(grpc_receiver, chat_trace, "POST /v1/chat/completions", "chat "), "chat ")
            assert chat.attributes["gen_ai.response.id"] == r.json()["id"]
    finally:
        grpc_receiver.stop()


def test_with_only_a_traces_endpoint_evaluations_travel_as_span_events(tmp_path, monkeypatch):
    """Trace-only receivers (Jaeger, Tempo, Phoenix) get a traces endpoint only: the evaluations then ride on the
    evaluated span as span events, and no log is sent."""
    only_traces = Receiver().start()
    try:
        otel_env(monkeypatch, "")
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{only_traces.url}/v1/traces")
        settings = Settings(db_path=tmp_path / "tw.db", adapter_root=tmp_path / "adapters", upstream_url=Upstream().url)
        with TestClient(create_app(settings)) as client:
            trace_id, _, headers = traceparent()
            body = {"texts": FRIENDLY[:2], "persona": "support-friendly", "session_id": "traces-only-1"}
            r = client.post("/v1/score", json=body, headers=headers)
            assert r.status_code == 200
            call = one(with_names(only_traces, trace_id, "tonewatch.score_texts"), "tonewatch.score_texts")
            events = [a for name, a in call.events if name == EVALUATION]
            labels = [a["gen_ai.evaluation.score.label"] for a in events if a["gen_ai.evaluation.name"] == "tone"]
            assert labels == [x["label"] for x in r.json()["results"]]
            assert {a["gen_ai.evaluation.name"] for a in events} >= {"formality", "politeness", "warmth", "tone"}
        assert not only_traces.logs
    finally:
        only_traces.stop()
