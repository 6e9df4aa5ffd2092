"""Chat completions through the app in-process, with the real bundled model."""

import json

import pytest

URL = "/v1/chat/completions"


def msg(text="Say hello in three words.", role="user"):
    return {"role": role, "content": text}


def test_completion_shape_and_usage(client):
    r = client.post(URL, json={"messages": [msg()], "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] in {"stop", "length"}
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 1 <= usage["completion_tokens"] <= 8


def test_greedy_is_deterministic_and_seeded_sampling_reproduces(client):
    body = {"messages": [msg("Name a fruit.")], "max_tokens": 12}
    a = client.post(URL, json={**body, "temperature": 0}).json()["choices"][0]["message"]["content"]
    b = client.post(URL, json={**body, "temperature": 0}).json()["choices"][0]["message"]["content"]
    assert a == b
    s1 = client.post(URL, json={**body, "temperature": 1.2, "seed": 5}).json()["choices"][0]["message"]["content"]
    s2 = client.post(URL, json={**body, "temperature": 1.2, "seed": 5}).json()["choices"][0]["message"]["content"]
    assert s1 == s2


def test_max_completion_tokens_is_honoured(client):
    r = client.post(
        URL, json={"messages": [msg("Tell me a long story.")], "max_completion_tokens": 3, "temperature": 0}
    )
    assert r.json()["usage"]["completion_tokens"] == 3
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_streaming_chunks_end_with_done(client):
    with client.stream(
        "POST",
        URL,
        json={
            "messages": [msg()],
            "max_tokens": 6,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1
    assert chunks[-1]["usage"]["completion_tokens"] <= 6
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    plain = client.post(URL, json={"messages": [msg()], "max_tokens": 6, "temperature": 0}).json()
    assert text == plain["choices"][0]["message"]["content"]


def test_models_lists_the_base_model(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert body["data"][0]["id"] == "SmolLM2-135M-Instruct"
    r = client.post(URL, json={"model": "SmolLM2-135M-Instruct", "messages": [msg()], "max_tokens": 2})
    assert r.status_code == 200 and r.json()["model"] == "SmolLM2-135M-Instruct"


def test_health_ready_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] in {"ready", "degraded"}
    # the CPU it runs on and what start-up measured and chose for it
    platform = ready.json()["platform"]
    assert platform["device"] == "cpu" and platform["cpu"] and platform["torch_capability"]
    assert set(platform["choices"]) >= {"output_head", "decode_threads", "lean_decode", "scorer_device"}
    assert platform["choices"]["output_head"].startswith(("oneDNN-reordered from", "plain ("))
    client.post(URL, json={"messages": [msg()], "max_tokens": 2})
    text = client.get("/metrics").text
    for name in [
        "tonewatch_request_latency_seconds_bucket",
        "tonewatch_time_to_first_token_seconds_bucket",
        "tonewatch_queue_wait_seconds_bucket",
        "tonewatch_batch_size_bucket",
        "tonewatch_prompt_tokens_total",
        "tonewatch_generated_tokens_total",
        "tonewatch_requests_total",
        "tonewatch_queue_depth",
        "tonewatch_inter_token_latency_seconds_bucket",
    ]:
        assert name in text, name
    assert 'tonewatch_requests_total{adapter="base",route="chat",status="200"}' in text


BAD_BODIES = [
    pytest.param({"messages": []}, "messages", id="empty-messages"),
    pytest.param({"messages": "hi"}, "messages", id="messages-not-list"),
    pytest.param({"messages": [{"role": "wizard", "content": "x"}]}, "role", id="unknown-role"),
    pytest.param({"messages": [{"role": "user", "content": None}]}, "content", id="null-content"),
    pytest.param({"messages": [{"role": "user"}]}, "content", id="missing-content"),
    pytest.param({"messages": [{"role": "user", "content": 5}]}, "content", id="content-not-string"),
    pytest.param({"messages": [msg("")]}, "empty", id="empty-user-message"),
    pytest.param({"messages": [msg()], "max_tokens": 0}, "max_tokens", id="max-tokens-zero"),
    pytest.param({"messages": [msg()], "max_tokens": 100000}, "max_tokens", id="max-tokens-over-limit"),
    pytest.param({"messages": [msg()], "max_tokens": "10"}, "max_tokens", id="max-tokens-string"),
    pytest.param({"messages": [msg()], "temperature": 3}, "temperature", id="temperature-range"),
    pytest.param({"messages": [msg()], "top_p": 0}, "top_p", id="top-p-zero"),
    pytest.param({"messages": [msg()], "n": 2}, "n=1", id="n-two"),
    pytest.param({"messages": [msg()], "stop": ["a", "b", "c", "d", "e"]}, "stop", id="too-many-stops"),
    pytest.param({"messages": [msg()], "stream": "yes"}, "stream", id="stream-not-bool"),
    pytest.param({"messages": [msg()], "frobnicate": 1}, "frobnicate", id="unknown-field"),
    pytest.param({"messages": [msg()], "session_id": "../etc"}, "session_id", id="bad-session-id"),
    # (a final assistant message is now continued, as vLLM's continue_final_message: tests/api/test_malformed.py)
    pytest.param({"messages": [msg("word " * 400)]}, "maximum context length", id="prompt-too-long"),
]


@pytest.mark.parametrize(("body", "needle"), BAD_BODIES)
def test_bad_input_is_a_clear_4xx(client, body, needle):
    r = client.post(URL, json=body)
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    assert needle in err["message"] or needle == err.get("param"), err


def test_malformed_json(client):
    r = client.post(URL, content=b'{"messages": [', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "JSON" in r.json()["error"]["message"]


def test_unknown_model_is_404(client):
    r = client.post(URL, json={"model": "gpt-9", "messages": [msg()]})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_oversized_body_is_413(client):
    r = client.post(URL, json={"messages": [msg("x" * 70_000)]})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


def test_unknown_path_uses_the_envelope(client):
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
