"""One bad request never hurts another (in-process app, real bundled model and scorer): poisoned sampling values,
text the tokenizer cannot take, and an OpenAPI document that says what the server really does."""

import json
import threading

import pytest

CHAT = "/v1/chat/completions"


def user(text="Where is my parcel?"):
    return {"role": "user", "content": text}


@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", 2**64), ("seed", -1), ("temperature", 1e-300), ("top_p", 1e-300), ("temperature", 0.001)],
)
def test_poisoned_sampling_values_are_400_naming_the_field(client, field, value):
    r = client.post(CHAT, json={"messages": [user()], "max_tokens": 4, field: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field


def test_poisoned_request_beside_normal_ones_hurts_nobody(client):
    results: dict[str, int] = {}

    def send(name, body):
        results[name] = client.post(CHAT, json=body).status_code

    bodies = {f"ok-{i}": {"messages": [user()], "max_tokens": 6, "temperature": 0} for i in range(3)}
    bodies["seed"] = {"messages": [user()], "max_tokens": 6, "temperature": 0.8, "seed": 2**64}
    bodies["top_p"] = {"messages": [user()], "max_tokens": 6, "temperature": 0.8, "top_p": 1e-300}
    threads = [threading.Thread(target=send, args=item) for item in bodies.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == {"ok-0": 200, "ok-1": 200, "ok-2": 200, "seed": 400, "top_p": 400}


RAW_SURROGATE_SCORE = b'{"texts": ["hi \\ud800 there"]}'
RAW_SURROGATE_CHAT = b'{"messages": [{"role": "user", "content": "hi \\udc00"}], "max_tokens": 2}'


def test_lone_surrogates_are_400_naming_the_field(client):
    r = client.post("/v1/score", content=RAW_SURROGATE_SCORE, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "texts[0]" in r.json()["error"]["message"]
    r = client.post(CHAT, content=RAW_SURROGATE_CHAT, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("messages.0.content")


def test_a_bad_text_does_not_fail_concurrent_score_calls(client):
    statuses: list[int] = []

    def good():
        statuses.append(client.post("/v1/score", json={"texts": ["Thanks, that was quick!"]}).status_code)

    def bad():
        statuses.append(
            client.post(
                "/v1/score", content=RAW_SURROGATE_SCORE, headers={"content-type": "application/json"}
            ).status_code
        )

    threads = [threading.Thread(target=good) for _ in range(6)] + [threading.Thread(target=bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(statuses) == [200] * 6 + [400]


@pytest.mark.parametrize("body", [{"texts": [""]}, {"texts": ["   "]}, {"texts": []}])
def test_empty_texts_are_refused(client, body):
    assert client.post("/v1/score", json=body).status_code == 400


def test_openapi_documents_errors_bounds_and_metrics(client):
    doc = client.get("/openapi.json").json()
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert "422" not in chat["responses"]
    for status in ("400", "404", "429", "503"):
        ref = chat["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorEnvelope")
    request_schema = doc["components"]["schemas"]["ChatCompletionRequest"]
    max_tokens = next(o for o in request_schema["properties"]["max_tokens"]["anyOf"] if o.get("type") == "integer")
    assert max_tokens["maximum"] == 64  # the api fixture's TONEWATCH_MAX_NEW_TOKENS
    seed = next(o for o in request_schema["properties"]["seed"]["anyOf"] if o.get("type") == "integer")
    assert seed["minimum"] == 0 and seed["maximum"] == 2**63 - 1
    score_texts = doc["components"]["schemas"]["ScoreRequest"]["properties"]["texts"]["items"]
    assert score_texts["minLength"] == 1
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "application/json" not in metrics and any(k.startswith("text/plain") for k in metrics)
    assert all(
        "422" not in op.get("responses", {}) or op["responses"]["422"]["description"] != "Validation Error"
        for ops in doc["paths"].values()
        for op in ops.values()
    )


def test_405_has_allow_and_the_envelope(client):
    r = client.get(CHAT)
    assert r.status_code == 405
    assert "POST" in r.headers["allow"]
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_every_response_has_a_request_id(client):
    assert client.get("/healthz").headers["x-request-id"]
    r = client.post("/v1/score", json={"texts": [""]}, headers={"x-request-id": "trace-42"})
    assert r.headers["x-request-id"] == "trace-42"
    json.loads(r.text)
