"""/v1/score, tone on chat completions, persona admin — through the app with the real models."""

import pytest

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

CASUAL = "lol yeah no worries, gonna fix it rn :)"
FORMAL = "We regret to inform you that your request cannot be processed at this time."
ROBOTIC = "Request denied. Error code 403. No further action."
FRIENDLY = "Thank you so much for your patience! I'm really happy I could help, have a wonderful day!"


def test_score_labels_and_dimensions_are_sensible(client):
    r = client.post("/v1/score", json={"texts": [CASUAL, FORMAL, ROBOTIC, FRIENDLY]})
    assert r.status_code == 200, r.text
    casual, formal, robotic, friendly = r.json()["results"]
    assert [casual["label"], formal["label"], robotic["label"], friendly["label"]] == [
        "casual",
        "formal",
        "robotic",
        "friendly",
    ]
    assert formal["formality"] > casual["formality"] + 0.3
    assert friendly["warmth"] > robotic["warmth"] + 0.4
    assert friendly["politeness"] > robotic["politeness"]
    for result in (casual, formal, robotic, friendly):
        assert abs(sum(result["probs"].values()) - 1) < 1e-3
        assert all(0 <= result[d] <= 1 for d in ("formality", "politeness", "warmth"))
        assert "persona_distance" not in result


def test_score_with_persona_and_embedding(client):
    r = client.post(
        "/v1/score", json={"texts": [FRIENDLY, ROBOTIC], "persona": "support-friendly", "include_embedding": True}
    )
    friendly, robotic = r.json()["results"]
    assert friendly["persona_match"] is True and robotic["persona_match"] is False
    assert friendly["persona_distance"] < robotic["persona_distance"]
    assert len(friendly["style_embedding"]) == len(robotic["style_embedding"]) > 3


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"texts": []}, 400, "texts"),
        ({"texts": [""]}, 400, "empty"),
        ({"texts": ["  "]}, 400, "empty"),
        ({"texts": ["x"] * 257}, 400, "texts"),
        ({"texts": ["x" * 8001]}, 400, "limit"),
        ({"texts": ["hi"], "persona": "nobody"}, 404, "persona"),
        ({"texts": "hi"}, 400, "texts"),
        ({"texts": ["hi"], "session_id": "a b"}, 400, "session_id"),
    ],
)
def test_score_bad_input(client, body, status, needle):
    r = client.post("/v1/score", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"] or needle == r.json()["error"].get("param")


def test_chat_completion_carries_tone(client):
    r = client.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Say thanks nicely."}],
            "max_tokens": 12,
            "temperature": 0,
            "persona": "support-formal",
        },
    )
    tone = r.json()["tone"]
    assert tone["label"] in {"formal", "friendly", "casual", "robotic"}
    assert tone["persona"] == "support-formal" and isinstance(tone["persona_match"], bool)
    unknown = client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "persona": "nobody"}
    )
    assert unknown.status_code == 404


def test_stream_final_chunk_carries_tone(client):
    import json

    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "stream": True},
    ) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    final = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
    assert "tone" in final and "label" in final["tone"]


def test_metrics_after_scoring(client):
    client.post("/v1/score", json={"texts": [ROBOTIC], "persona": "support-friendly", "adapter": "vendor-bot"})
    text = client.get("/metrics").text
    assert 'tonewatch_tone_label_total{adapter="vendor-bot",label="robotic",persona="support-friendly"}' in text
    assert 'tonewatch_persona_mismatch_total{adapter="vendor-bot",persona="support-friendly"}' in text
    assert 'tonewatch_tone_dimension_bucket{adapter="vendor-bot",dimension="warmth"' in text
    assert "tonewatch_scoring_seconds_count" in text
    assert 'tonewatch_requests_total{adapter="vendor-bot",route="score",status="200"}' in text


def test_metric_labels_only_from_bounded_sets(client):
    """Client-chosen `adapter` strings never become label values: unconfigured ones count as 'external'."""
    before = client.get("/metrics").text.count("\n")
    for i in range(30):
        r = client.post("/v1/score", json={"texts": ["Thanks!"], "adapter": f"attacker-{i}"})
        assert r.status_code == 200
    text = client.get("/metrics").text
    assert "attacker-" not in text
    assert 'tonewatch_tone_label_total{adapter="external"' in text
    # 30 new client strings added no series (only counts moved)
    assert text.count("\n") - before < 60


def test_admin_requires_configured_token(client):
    r = client.get("/admin/personas")
    assert r.status_code == 403
    assert "TONEWATCH_ADMIN_TOKEN" in r.json()["error"]["message"]
