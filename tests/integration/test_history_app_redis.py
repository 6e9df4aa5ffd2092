"""The whole app on a real redis-server of its own: Redis dies mid-session, chat and scoring go on, /readyz says
degraded, and after the restart every turn is in the history, in order."""

import time

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

FRIENDLY = "Thanks so much for your patience! I'm happy to help, have a lovely day!"


def turns_of(client, session):
    return client.get("/v1/sessions/" + session, params={"limit": 1000}).json()["turns"]


def test_redis_outage_loses_no_turn(redis_server, tmp_path):
    server = redis_server(persistent=True)
    settings = Settings(redis_url=server.url, db_path=tmp_path / "tw.db", adapter_root=tmp_path / "ad",
                        spill_path=tmp_path / "spill.jsonl")
    session = "outage-1"
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["status"] == "ready"
        for i in range(3):
            r = client.post("/v1/score", json={"texts": [f"{FRIENDLY} #{i}"], "session_id": session})
            assert r.status_code == 200
        server.kill()
        for i in range(3, 7):
            r = client.post("/v1/score", json={"texts": [f"{FRIENDLY} #{i}"], "session_id": session})
            assert r.status_code == 200 and "drift" in r.json()["results"][0]
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                         "max_tokens": 4, "session_id": session})
        assert chat.status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert 'tonewatch_history_spilled_turns 5.0' in client.get("/metrics").text
        assert client.get("/v1/sessions/" + session).status_code == 503
        server.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(turns_of(client, session)) < 8:
            time.sleep(0.2)
        turns = turns_of(client, session)
        assert [t["seq"] for t in turns] == list(range(1, 9))
        scored = [t["response"] for t in turns if t["adapter"] == "external"]
        assert scored == [f"{FRIENDLY} #{i}" for i in range(7)]
        assert client.get("/readyz").json()["status"] == "ready"
