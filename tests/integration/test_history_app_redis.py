"""The whole app on a real redis-server of its own, under the faults an SRE would try: Redis killed mid-session,
Redis hung (SIGSTOP), a session deleted right after an outage. Chat and scoring go on, no turn and no drift state
is lost, no request waits on the dead store, and a deleted session stays deleted."""

import time

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

pytestmark = pytest.mark.model

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FRIENDLY = "Thanks so much for your patience! I'm happy to help, have a lovely day!"
ROBOTIC = "Request processed. Ticket closed. No further action."
# in persona, then a run off persona (moves the CUSUM), then back: a state worth comparing
SCRIPT = [FRIENDLY, FRIENDLY, ROBOTIC, ROBOTIC, FRIENDLY, ROBOTIC, ROBOTIC, ROBOTIC, FRIENDLY, FRIENDLY]


def settings_for(url, tmp_path, **kw):
    defaults = dict(db_path=tmp_path / "tw.db", adapter_root=tmp_path / "ad", spill_path=tmp_path / "spill.jsonl")
    return Settings(redis_url=url, admin_token=TOKEN, **{**defaults, **kw})


SOCKET_TIMEOUT_S = 1.0  # the Redis client's socket timeout (app/store/redis_store.py)


def trips_of(client) -> float:
    """How often the store's circuit breaker has opened (from /metrics)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("tonewatch_store_circuit_trips_total "):
            return float(line.split()[-1])
    return 0.0


def post_turn(client, session, i):
    r = client.post(
        "/v1/score", json={"texts": [f"{SCRIPT[i]} #{i}"], "session_id": session, "persona": "support-friendly"}
    )
    assert r.status_code == 200, r.text
    return r


def turns_of(client, session):
    r = client.get("/v1/sessions/" + session, params={"limit": 1000}, headers=AUTH)
    return r.json()["turns"] if r.status_code == 200 else []


def drift_of(client, session):
    body = client.get(f"/v1/sessions/{session}/drift", headers=AUTH).json()
    return {k: body[k] for k in ("turns", "cusum", "score", "alert", "detector")}


def wait_drained(client, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            "tonewatch_history_spilled_turns 0.0" in client.get("/metrics").text
            and client.get("/readyz").json()["status"] == "ready"
        ):
            return
        time.sleep(0.1)
    raise AssertionError("spill did not drain")


def test_outage_loses_no_turn_and_drift_state_equals_a_run_without_it(redis_server, tmp_path):
    server = redis_server(persistent=True)
    with TestClient(create_app(settings_for(server.url, tmp_path))) as client:
        for i in range(len(SCRIPT)):  # the control session: no outage
            post_turn(client, "calm-1", i)
        for i in range(3):
            post_turn(client, "outage-1", i)
        server.kill()
        for i in range(3, 8):
            r = post_turn(client, "outage-1", i)
            assert r.json()["results"][0]["drift"]["provisional"] is True
        chat = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "session_id": "outage-chat"},
        )
        assert chat.status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert "tonewatch_history_spilled_turns 6.0" in client.get("/metrics").text
        assert client.get("/v1/sessions/outage-1", headers=AUTH).status_code == 503
        server.start()
        # the store is back: later turns queue behind the spilled ones of their session, then everything drains
        for i in range(8, len(SCRIPT)):
            post_turn(client, "outage-1", i)
        wait_drained(client)
        turns = turns_of(client, "outage-1")
        assert [t["seq"] for t in turns] == list(range(1, len(SCRIPT) + 1))
        assert [t["response"] for t in turns] == [f"{SCRIPT[i]} #{i}" for i in range(len(SCRIPT))]
        assert all(t["drift"]["turns"] == t["seq"] for t in turns)  # each turn's drift was applied in order
        assert drift_of(client, "outage-1") == drift_of(client, "calm-1")
        assert len(turns_of(client, "outage-chat")) == 1
        # the session index was rebuilt by the replay: listed once, with every turn and the final drift
        listed = {s["session_id"]: s for s in client.get("/v1/sessions", headers=AUTH).json()["data"]}
        assert sorted(listed) == ["calm-1", "outage-1", "outage-chat"]
        assert listed["outage-1"]["turns"] == len(SCRIPT)
        assert listed["outage-1"]["drift"] == {**listed["calm-1"]["drift"]}
        assert sum(listed["outage-1"]["labels"].values()) == len(SCRIPT)


def test_drifting_sessions_are_listed_exported_and_counted_after_a_restart(redis_server, tmp_path):
    """The operator's path on Redis: alerting sessions of one persona, their export, and the gauges of a fresh
    replica (the store's counts, not this process's memory)."""
    server = redis_server(persistent=True)
    with TestClient(create_app(settings_for(server.url, tmp_path))) as client:
        for _ in range(4):
            post_turn(client, "calm-2", 0)
        for i in range(8):  # ends on a run of robotic answers: in alarm
            r = post_turn(client, "drifty-2", i)
        assert r.json()["results"][0]["drift"]["alert"] is True
        alerting = client.get("/v1/sessions", params={"alerting": "true", "persona": "support-friendly"}, headers=AUTH)
        assert [s["session_id"] for s in alerting.json()["data"]] == ["drifty-2"]
        by_drift = client.get("/v1/sessions", params={"order": "drift"}, headers=AUTH).json()["data"]
        assert [s["session_id"] for s in by_drift] == ["drifty-2", "calm-2"]
        export = client.get("/v1/sessions/export", params={"order": "drift"}, headers=AUTH)
        lines = [line for line in export.text.splitlines() if line]
        assert len(lines) == 8 + 4 and '"session_id":"drifty-2"' in lines[0]
    with TestClient(create_app(settings_for(server.url, tmp_path, spill_path=tmp_path / "second.jsonl"))) as client:
        gauges = {
            line.split()[0]: float(line.split()[1])
            for line in client.get("/metrics").text.splitlines()
            if line.startswith(("tonewatch_sessions_active ", "tonewatch_sessions_drifting "))
        }
        assert gauges == {"tonewatch_sessions_active": 2.0, "tonewatch_sessions_drifting": 1.0}


def test_a_session_deleted_right_after_an_outage_stays_deleted(redis_server, tmp_path):
    server = redis_server(persistent=True)
    with TestClient(create_app(settings_for(server.url, tmp_path))) as client:
        post_turn(client, "gone-1", 0)
        server.kill()
        for i in range(1, 5):
            post_turn(client, "gone-1", i)  # spilled
        server.start()
        deadline = time.monotonic() + 10
        while True:  # the first DELETE the store can take (503 while the breaker still says it is down)
            r = client.delete("/v1/sessions/gone-1", headers=AUTH)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            assert r.status_code == 503
            time.sleep(0.05)
        assert r.status_code == 200 and r.json()["existed"] is True
        wait_drained(client)
        time.sleep(0.3)
        assert client.get("/v1/sessions/gone-1", headers=AUTH).status_code == 404
        assert client.get("/v1/sessions/gone-1/drift", headers=AUTH).status_code == 404
        post_turn(client, "gone-1", 0)  # a new conversation under the same id starts from scratch
        assert [t["seq"] for t in turns_of(client, "gone-1")] == [1]
        assert drift_of(client, "gone-1")["turns"] == 1


@pytest.mark.slow
def test_a_hung_redis_costs_requests_nothing(redis_server, tmp_path):
    server = redis_server(persistent=True)
    # the production budget (the suite's default is looser, tests/conftest.py): a hung call is cut off at 0.25 s
    with TestClient(create_app(settings_for(server.url, tmp_path, store_timeout_s=0.25))) as client:
        for i in range(len(SCRIPT)):
            post_turn(client, "calm-2", i)
        for i in range(3):
            post_turn(client, "hang-1", i)
        trips = trips_of(client)
        server.pause()  # SIGSTOP: connections open, nothing answers
        try:
            hung = []
            for i in range(3, len(SCRIPT)):
                t0 = time.perf_counter()
                post_turn(client, "hang-1", i)
                hung.append(time.perf_counter() - t0)
            ready = client.get("/readyz")
        finally:
            server.resume()
        # the first store call past the hang trips the breaker; nothing waits on the hung store after that. Without
        # the breaker each request waits out the client's socket timeout (1 s) per store call: 3-5 s a request.
        assert trips_of(client) == trips + 1
        assert ready.json()["status"] == "degraded"
        assert sum(hung[1:]) < len(hung[1:]) * SOCKET_TIMEOUT_S, hung
        wait_drained(client)
        assert [t["seq"] for t in turns_of(client, "hang-1")] == list(range(1, len(SCRIPT) + 1))
        assert drift_of(client, "hang-1") == drift_of(client, "calm-2")


def test_the_app_on_a_real_redis_cluster(redis_cluster, tmp_path):
    """TONEWATCH_REDIS_URL=rediscluster://...: turns, drift state, deletion tombstones and the control document all
    work on a 3-master cluster (every key of a session shares one hash slot)."""
    settings = settings_for(redis_cluster.url, tmp_path)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["status"] == "ready"
        for i in range(len(SCRIPT)):
            post_turn(client, "cluster-1", i)
            post_turn(client, f"cluster-spread-{i}", i)  # sessions on many slots / masters
        got = turns_of(client, "cluster-1")
        assert [t["seq"] for t in got] == list(range(1, len(SCRIPT) + 1))
        assert drift_of(client, "cluster-1")["turns"] == len(SCRIPT)
        persona = {"exemplars": ["Hi there!", "Thanks a lot!", "Happy to help!", "No worries!", "Lovely!"]}
        assert client.put("/admin/personas/cluster-voice", json=persona, headers=AUTH).status_code == 200
        assert client.get("/readyz").json()["control"]["version"] >= 1
        assert client.delete("/v1/sessions/cluster-1", headers=AUTH).json()["existed"] is True
        assert client.get("/v1/sessions/cluster-1", headers=AUTH).status_code == 404
