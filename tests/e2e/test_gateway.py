"""Gateway mode against a real OpenAI-compatible peer: `transformers serve --continuous-batching` on the bundled
model as the upstream, a real `tonewatch serve` process with TONEWATCH_UPSTREAM_URL in front of it, driven by the
official openai client. Covers relaying (plain, streamed chunk by chunk), scoring and history of relayed answers,
pass-through of the body and of upstream 4xx, and the upstream failing: refused, gone, dying mid-stream."""

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e
TOKEN = "gateway-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUESTION = [{"role": "user", "content": "My parcel is late. What can I do?"}]


@pytest.fixture(scope="module")
def upstream():
    from tests.support.servers import TransformersServe, free_port

    peer = TransformersServe(free_port())
    try:
        peer.wait_ready()
        yield peer
    finally:
        peer.stop()


def gateway_process(tmp, upstream_url, **env):
    from tests.support.servers import ServerProcess, free_port

    return ServerProcess(
        {
            "TONEWATCH_UPSTREAM_URL": upstream_url,
            "TONEWATCH_DB_PATH": str(tmp / "gw.db"),
            "TONEWATCH_ADAPTER_ROOT": str(tmp / "ad"),
            "TONEWATCH_ADMIN_TOKEN": TOKEN,
            **env,
        },
        free_port(),
    )


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    srv = gateway_process(tmp_path_factory.mktemp("gw"), upstream.base_url)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_starts_without_a_local_model(gateway):
    ready = httpx.get(gateway.base_url + "/readyz").json()
    assert ready["status"] == "ready" and ready["backend"] == "upstream"
    gateway.log.flush()
    log = Path(gateway.log.name).read_text()
    assert "gateway to" in log and "/272 " not in log  # the LM's 272 tensors were never loaded (MiniLM's 103 are)


def test_openai_client_plain_and_stream_through_the_gateway(gateway, upstream):
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused")
    models = [m.id for m in client.models.list()]
    assert models == [upstream.model]  # the upstream's own list
    plain = client.chat.completions.create(
        model=upstream.model,
        messages=QUESTION,
        max_tokens=16,
        temperature=0,
        extra_body={"session_id": "gw-openai", "persona": "support-friendly"},
    )
    assert plain.choices[0].message.content
    extra = plain.model_extra
    assert extra["tone"]["label"] and extra["tone"]["persona"] == "support-friendly"
    assert extra["drift"]["turns"] == 1
    direct = httpx.post(
        upstream.base_url + "/chat/completions",
        json={"model": upstream.model, "messages": QUESTION, "max_tokens": 16, "temperature": 0},
        timeout=60,
    ).json()
    assert plain.choices[0].message.content == direct["choices"][0]["message"]["content"]  # relayed as it came
    chunks = list(
        client.chat.completions.create(
            model=upstream.model,
            messages=QUESTION,
            max_tokens=16,
            temperature=0,
            stream=True,
            extra_body={"session_id": "gw-openai"},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain.choices[0].message.content
    last = chunks[-1]
    assert last.choices == [] and last.model_extra["tone"]["label"] and last.model_extra["drift"]["turns"] == 2


def test_stream_is_relayed_chunk_by_chunk(gateway, upstream):
    body = {"model": upstream.model, "messages": QUESTION, "max_tokens": 12, "temperature": 0, "stream": True}
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", json=body, timeout=60) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    with httpx.stream("POST", upstream.base_url + "/chat/completions", json=body, timeout=60) as r:
        direct = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    tone = json.loads(events[-2])
    assert tone["choices"] == [] and "tone" in tone
    relayed = [json.loads(e) for e in events[:-2]]
    upstream_chunks = [json.loads(e) for e in direct if e != "[DONE]"]  # (transformers serve sends no [DONE])
    # the same chunks, one for one, as the upstream sent them (ids and timestamps differ per call)
    assert [c["choices"] for c in relayed] == [c["choices"] for c in upstream_chunks]


def test_only_tonewatch_fields_are_removed_and_upstream_4xx_pass_through(gateway, upstream):
    url = gateway.base_url + "/v1/chat/completions"
    # transformers serve refuses unknown fields: session_id/persona reaching it would be a 422
    ok = httpx.post(
        url,
        json={
            "model": upstream.model,
            "messages": QUESTION,
            "max_tokens": 4,
            "session_id": "gw-fields",
            "persona": "support-formal",
        },
        timeout=60,
    )
    assert ok.status_code == 200 and ok.json()["tone"]["persona"] == "support-formal"
    # any other field is forwarded as it came: the upstream's own 422, status and body unchanged
    bad = httpx.post(
        url, json={"model": upstream.model, "messages": QUESTION, "max_tokens": 4, "not_a_field": 1}, timeout=60
    )
    direct = httpx.post(
        upstream.base_url + "/chat/completions",
        json={"model": upstream.model, "messages": QUESTION, "max_tokens": 4, "not_a_field": 1},
        timeout=60,
    )
    assert bad.status_code == direct.status_code == 422
    assert bad.json() == direct.json()
    pinned = httpx.post(url, json={"model": "someone/else", "messages": QUESTION, "max_tokens": 4}, timeout=60)
    assert pinned.status_code == 400 and "pinned" in pinned.text
    # Tonewatch's own checks still apply before anything is sent
    assert httpx.post(url, json={"messages": []}).status_code == 400
    assert httpx.post(url, json={"messages": QUESTION, "persona": "nobody"}).status_code == 404


def test_relayed_turns_are_recorded_and_exported(gateway, upstream):
    for _ in range(3):
        r = httpx.post(
            gateway.base_url + "/v1/chat/completions",
            json={"messages": QUESTION, "max_tokens": 8, "session_id": "gw-history", "temperature": 0},
            timeout=60,
        )
        assert r.status_code == 200
        assert r.json()["model"] == upstream.model  # no model named: routed to the upstream's model
    turns = httpx.get(gateway.base_url + "/v1/sessions/gw-history", headers=AUTH).json()["turns"]
    assert [t["seq"] for t in turns] == [1, 2, 3]
    assert all(t["adapter"] == upstream.model and t["tone"]["label"] and t["latency"]["total_s"] > 0 for t in turns)
    metrics = httpx.get(gateway.base_url + "/metrics").text
    assert 'tonewatch_upstream_requests_total{status="200",upstream="upstream"}' in metrics
    assert f'tonewatch_upstream_latency_seconds_count{{model="{upstream.model}"}}' in metrics
    assert f'tonewatch_upstream_time_to_first_token_seconds_count{{model="{upstream.model}"}}' in metrics
    assert f'tonewatch_requests_total{{adapter="{upstream.model}",route="chat",status="200"}}' in metrics


def test_adapter_admin_explains_itself_on_a_plain_upstream(gateway, upstream):
    r = httpx.post(gateway.base_url + "/admin/adapters", headers=AUTH, json={"name": "x", "path": "x"})
    assert r.status_code == 501 and "vLLM" in r.json()["error"]["message"]
    listing = httpx.get(gateway.base_url + "/admin/adapters", headers=AUTH).json()
    assert listing["base"] == upstream.model


def test_refused_upstream_is_502_and_not_ready(tmp_path):
    from tests.support.servers import free_port

    srv = gateway_process(tmp_path, f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(srv.base_url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        ready = httpx.get(srv.base_url + "/readyz")
        assert ready.status_code == 503 and "upstream" in ready.json()["reasons"]
        # a refused connection fails at once: no retry loop (the client's 10 s timeout only catches a hang)
        r = httpx.post(srv.base_url + "/v1/chat/completions", json={"model": "m", "messages": QUESTION}, timeout=10)
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable"
    finally:
        srv.stop()


def test_upstream_dying_mid_stream(tmp_path):
    """The upstream is killed mid-answer (here an embedded Tonewatch server: any real OpenAI-compatible engine dies
    the same way, and it starts faster than a second `transformers serve`)."""
    from tests.support.servers import ServerProcess, free_port

    peer = ServerProcess(
        {"TONEWATCH_DB_PATH": str(tmp_path / "engine.db"), "TONEWATCH_ADAPTER_ROOT": str(tmp_path / "ad")}, free_port()
    )
    srv = None
    try:
        peer.wait_ready()
        srv = gateway_process(tmp_path, peer.base_url + "/v1")
        srv.wait_ready()
        body = {"messages": QUESTION, "max_tokens": 400, "stream": True, "session_id": "gw-dies"}
        events = []
        with httpx.stream("POST", srv.base_url + "/v1/chat/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 5:
                        peer.kill()  # the engine dies mid-answer
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])
        assert error["error"]["code"] in {"upstream_unavailable", "upstream_timeout"}
        deadline = time.monotonic() + 30  # the failed turn is recorded after the stream ends
        while not (turns := httpx.get(srv.base_url + "/v1/sessions/gw-dies", headers=AUTH).json().get("turns")):
            assert time.monotonic() < deadline, "the failed turn was never recorded"
            time.sleep(0.2)
        assert len(turns) == 1 and turns[0]["finish_reason"] == "error" and turns[0]["delivered"] is False
        assert httpx.get(srv.base_url + "/healthz").status_code == 200  # nothing crashed
        after = httpx.post(srv.base_url + "/v1/chat/completions", json={"messages": QUESTION}, timeout=10)
        assert after.status_code == 502
        assert httpx.get(srv.base_url + "/readyz").status_code == 503
    finally:
        if srv is not None:
            srv.stop()
        peer.stop()


def test_tool_call_only_answers_are_recorded_without_a_tone(tmp_path):
    """A Tonewatch embedded server is a real OpenAI-compatible upstream that answers with tool calls."""
    from tests.support.servers import ServerProcess, free_port

    engine = ServerProcess(
        {"TONEWATCH_DB_PATH": str(tmp_path / "engine.db"), "TONEWATCH_ADAPTER_ROOT": str(tmp_path / "ad")}, free_port()
    )
    srv = None
    try:
        engine.wait_ready()
        srv = gateway_process(tmp_path, engine.base_url + "/v1")
        srv.wait_ready()
        tool = {
            "type": "function",
            "function": {
                "name": "get_order",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}},
                    "required": ["order_id"],
                    "additionalProperties": False,
                },
            },
        }
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused")
        r = client.chat.completions.create(
            model="SmolLM2-135M-Instruct",
            messages=QUESTION,
            tools=[tool],
            tool_choice="required",
            max_tokens=80,
            temperature=0,
            extra_body={"session_id": "gw-tools"},
        )
        assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.tool_calls  # forwarded as it came
        assert r.model_extra["tone"] is None
        stream = list(
            client.chat.completions.create(
                model="SmolLM2-135M-Instruct",
                messages=QUESTION,
                tools=[tool],
                tool_choice="required",
                max_tokens=80,
                temperature=0,
                stream=True,
                extra_body={"session_id": "gw-tools"},
            )
        )
        assert any(c.choices and c.choices[0].delta.tool_calls for c in stream)
        turns = httpx.get(srv.base_url + "/v1/sessions/gw-tools", headers=AUTH).json()["turns"]
        assert len(turns) == 2 and all(t["tone"] == {} and t["finish_reason"] == "tool_calls" for t in turns)
    finally:
        if srv is not None:
            srv.stop()
        engine.stop()


def test_adapter_admin_forwards_to_a_runtime_lora_upstream(tmp_path, bundled):
    """TONEWATCH_UPSTREAM_KIND=vllm: the gateway's adapter admin drives the upstream's runtime LoRA API
    (/v1/load_lora_adapter, /v1/unload_lora_adapter). The upstream here is an embedded Tonewatch server, which serves
    vLLM's API for it; requests naming the adapter, or none after it is activated, are answered by it."""
    from tests.support.adapter_factory import make_adapter
    from tests.support.servers import ServerProcess, free_port

    model, _, _ = bundled
    root = tmp_path / "adapters"
    make_adapter(root / "voice-a", model, kind="lora", r=4, alpha=8, seed=41)
    (root / "manifest.json").write_text('{"adapters": []}')  # the engine starts with none: it comes through us
    engine_token = "engine-admin-token-0123456789"
    engine = ServerProcess(
        {
            "TONEWATCH_DB_PATH": str(tmp_path / "engine.db"),
            "TONEWATCH_ADAPTER_ROOT": str(root),
            "TONEWATCH_ADMIN_TOKEN": engine_token,
        },
        free_port(),
    )
    srv = None
    try:
        engine.wait_ready()
        srv = gateway_process(
            tmp_path,
            engine.base_url + "/v1",
            TONEWATCH_ADAPTER_ROOT=str(root),
            TONEWATCH_UPSTREAM_KIND="vllm",
            TONEWATCH_UPSTREAM_ADAPTER_ROOT=".",  # the engine resolves paths inside its own adapter root
            TONEWATCH_UPSTREAM_API_KEY=engine_token,
        )
        srv.wait_ready()
        r = httpx.post(srv.base_url + "/admin/adapters", headers=AUTH, json={"name": "voice-a", "path": "voice-a"})
        assert r.status_code == 200, r.text
        assert "voice-a" in {m["id"] for m in httpx.get(engine.base_url + "/v1/models").json()["data"]}
        body = {"messages": QUESTION, "max_tokens": 8, "temperature": 0}
        named = httpx.post(srv.base_url + "/v1/chat/completions", json={**body, "model": "voice-a"}, timeout=60)
        assert named.status_code == 200 and named.json()["model"] == "voice-a"
        assert httpx.post(srv.base_url + "/admin/adapters/voice-a/activate", headers=AUTH).status_code == 200
        routed = httpx.post(srv.base_url + "/v1/chat/completions", json=body, timeout=60)
        assert routed.json()["model"] == "voice-a"
        assert httpx.delete(srv.base_url + "/admin/adapters/voice-a", headers=AUTH).status_code == 409  # the default
        base = httpx.get(srv.base_url + "/admin/adapters", headers=AUTH).json()["base"]
        assert httpx.post(f"{srv.base_url}/admin/adapters/{base}/activate", headers=AUTH).status_code == 200
        assert httpx.delete(srv.base_url + "/admin/adapters/voice-a", headers=AUTH).status_code == 200
        assert "voice-a" not in {m["id"] for m in httpx.get(engine.base_url + "/v1/models").json()["data"]}
    finally:
        if srv is not None:
            srv.stop()
        engine.stop()
