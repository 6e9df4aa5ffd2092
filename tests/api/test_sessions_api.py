"""Session history and drift through the app (SQLite store): chat and score turns, paging, drift alerts."""

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

FRIENDLY = [
    "Thanks so much for reaching out! I'm really happy to help you sort this out today.",
    "Oh no, I'm so sorry about that! Let me fix it for you right away.",
    "Great news, your refund is on its way! Thanks for your patience, it means a lot.",
    "No worries at all! I've updated your address, and you're all set.",
    "I totally understand, that sounds frustrating! I've sent a replacement today.",
    "Happy to help! Your new plan starts tomorrow, enjoy!",
]
ROBOTIC = [
    "Request received. Ticket 4411 closed.",
    "Refund denied. Policy 7.2.",
    "Address updated. No further action.",
    "Invalid input. Resubmit form.",
    "Order cancelled. Status: final.",
    "Account locked. Contact admin.",
]


@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sessions")
    settings = Settings(db_path=tmp / "tw.db", adapter_root=tmp / "adapters", admin_token=TOKEN, history_redact=True)
    with TestClient(create_app(settings)) as client:
        yield client


def score(client, session, texts, persona="support-friendly"):
    r = client.post("/v1/score", json={"texts": texts, "persona": persona, "session_id": session})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_stable_session_raises_no_alert_and_switch_does(app_client):
    stable = score(app_client, "stable-1", FRIENDLY * 3)
    assert not any(r["drift"]["alert"] for r in stable)
    switched = score(app_client, "switch-1", FRIENDLY[:4] + ROBOTIC)
    alerts = [r["drift"]["alert"] for r in switched]
    assert not any(alerts[:4])
    first_alert = alerts.index(True)
    assert first_alert - 4 < 3  # flagged within 3 turns of the switch
    assert switched[first_alert]["drift"]["detector"] in {"cusum", "ewma"}
    drift = app_client.get("/v1/sessions/switch-1/drift", headers=AUTH).json()
    assert drift["alert"] is True and drift["turns"] == len(FRIENDLY[:4] + ROBOTIC)


def test_history_paging_and_order(app_client):
    texts = [f"Thanks! Update number {i} is done, have a lovely day!" for i in range(7)]
    score(app_client, "paged-1", texts)
    page1 = app_client.get("/v1/sessions/paged-1", params={"limit": 3}, headers=AUTH).json()
    assert [t["seq"] for t in page1["turns"]] == [1, 2, 3]
    page2 = app_client.get(
        "/v1/sessions/paged-1", params={"limit": 3, "cursor": page1["next_cursor"]}, headers=AUTH
    ).json()
    page3 = app_client.get(
        "/v1/sessions/paged-1", params={"limit": 3, "cursor": page2["next_cursor"]}, headers=AUTH
    ).json()
    seen = [t["response"] for p in (page1, page2, page3) for t in p["turns"]]
    assert seen == texts and page3["next_cursor"] is None
    turn = page1["turns"][0]
    assert turn["tone"]["label"] and turn["adapter"] == "external" and turn["persona"] == "support-friendly"


def test_chat_turn_recorded_with_latency_and_redaction(app_client):
    r = app_client.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "My email is jo@example.com and card 4111 1111 1111 1111"}],
            "max_tokens": 8,
            "temperature": 0,
            "session_id": "chat-1",
            "persona": "support-formal",
        },
    )
    assert r.status_code == 200
    assert set(r.json()["drift"]) >= {"score", "alert", "detector"}
    turn = app_client.get("/v1/sessions/chat-1", headers=AUTH).json()["turns"][0]
    assert "jo@example.com" not in turn["prompt"] and "4111" not in turn["prompt"]
    assert turn["latency"]["tokens"] >= 1 and turn["latency"]["total_s"] > 0
    assert turn["request_id"] == r.json()["id"]


def test_session_endpoints_validate_and_delete(app_client):
    assert app_client.get("/v1/sessions/no-such", headers=AUTH).status_code == 404
    assert app_client.get("/v1/sessions/bad%20id", headers=AUTH).status_code in (400, 404, 422)
    assert app_client.get("/v1/sessions/x", params={"limit": 5000}, headers=AUTH).status_code == 400
    # a cursor past SQLite's integer range is a 400, not a 500
    assert app_client.get("/v1/sessions/never-seen", params={"cursor": 2**63}, headers=AUTH).status_code == 400
    # a session that is not there is a 404 at any cursor; one that is has an empty page past its end
    assert app_client.get("/v1/sessions/never-seen", params={"cursor": 2**63 - 1}, headers=AUTH).status_code == 404
    score(app_client, "gone-1", FRIENDLY[:2])
    last = app_client.get("/v1/sessions/gone-1", params={"cursor": 2**63 - 1}, headers=AUTH)
    assert last.status_code == 200 and last.json()["turns"] == []
    assert app_client.delete("/v1/sessions/gone-1").status_code == 401
    assert app_client.delete("/v1/sessions/gone-1", headers=AUTH).json()["existed"] is True
    assert app_client.get("/v1/sessions/gone-1", headers=AUTH).status_code == 404


def test_drift_metrics_exported(app_client):
    text = app_client.get("/metrics").text
    assert 'tonewatch_tone_drift_alerts_total{adapter="external",persona="support-friendly"}' in text
    assert 'tonewatch_tone_drift_score{adapter="external",persona="support-friendly",replica=' in text
    assert "tonewatch_sessions_active" in text and "tonewatch_history_write_seconds_count" in text


def test_history_is_not_world_readable(app_client):
    score(app_client, "private-1", FRIENDLY[:1])
    for path in ("/v1/sessions/private-1", "/v1/sessions/private-1/drift"):
        r = app_client.get(path)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert app_client.get(path, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert app_client.get(path, headers=AUTH).status_code == 200


def test_history_refused_when_no_credential_is_configured(tmp_path):
    settings = Settings(db_path=tmp_path / "tw.db", adapter_root=tmp_path / "adapters")
    with TestClient(create_app(settings)) as client:
        score(client, "nobody-1", FRIENDLY[:1])
        r = client.get("/v1/sessions/nobody-1")
        assert r.status_code == 403
        assert "TONEWATCH_API_KEYS" in r.json()["error"]["message"]


def test_client_api_keys_guard_every_v1_route(tmp_path):
    key = "client-key-0123456789abcdef"
    settings = Settings(db_path=tmp_path / "tw.db", adapter_root=tmp_path / "adapters", api_keys=key)
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/score", json={"texts": ["hi"]}).status_code == 401
        assert client.get("/v1/models").status_code == 401
        assert (
            client.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
            ).status_code
            == 401
        )
        auth = {"Authorization": f"Bearer {key}"}
        assert client.post("/v1/score", json={"texts": ["hi"], "session_id": "k-1"}, headers=auth).status_code == 200
        assert client.get("/v1/sessions/k-1", headers=auth).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes stay open
