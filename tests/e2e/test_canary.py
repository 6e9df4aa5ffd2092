"""Canary rollout gated by tone, with the real bundled model and the shipped adapters behind a real server: the
robotic adapter as a canary against the friendly default (judged against support-friendly) is rolled back within a
bounded number of sessions, after which every new session is served by the default again; the canary's state
survives a restart."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TOKEN = "canary-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUESTIONS = [
    "My parcel is late, what can I do?",
    "How do I reset my password?",
    "Can I return a lamp?",
    "I was charged twice this month.",
    "Where is order 4411?",
    "Can I change my delivery address?",
]
MAX_SESSIONS = 60
WAVE = 6  # sessions in flight at once


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("canary")
    return {
        "TONEWATCH_DB_PATH": str(tmp / "tw.db"),
        "TONEWATCH_ADMIN_TOKEN": TOKEN,
        "TONEWATCH_DEFAULT_ADAPTER": "support-friendly",
        "TONEWATCH_MAX_WAIT_MS": "20",
    }


def start(env):
    from tests.support.servers import ServerProcess, free_port

    srv = ServerProcess(env, free_port())
    srv.wait_ready(120)
    return srv


def chat(url, session, question):
    r = httpx.post(
        url + "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 32,
            "temperature": 0,
            "session_id": session,
        },
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return r.json()["model"]


def test_a_worse_canary_is_rolled_back_and_its_state_survives_a_restart(env):
    srv = start(env)
    try:
        url = srv.base_url
        body = {"share": 0.5, "persona": "support-friendly", "min_turns": 10, "relative_risk": 4.0}
        r = httpx.post(url + "/admin/adapters/support-robotic/canary", json=body, headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "running" and r.json()["current"] == "support-friendly"
        assert httpx.post(url + "/admin/adapters/support-formal/canary", json=body, headers=AUTH).status_code == 409
        served = {"support-robotic": 0, "support-friendly": 0}
        pinned = None

        def session(i):
            # two turns; a session stays on its side
            name = f"cust-{i}"
            first = chat(url, name, QUESTIONS[i % len(QUESTIONS)])
            assert chat(url, name, QUESTIONS[(i + 1) % len(QUESTIONS)]) in (first, "support-friendly")
            return name, first

        # customers arrive WAVE at a time (as they would; it also lets their turns share decode steps)
        with ThreadPoolExecutor(WAVE) as pool:
            for wave in range(0, MAX_SESSIONS, WAVE):
                for name, first in pool.map(session, range(wave, wave + WAVE)):
                    served[first] += 1
                    if first == "support-robotic" and pinned is None:
                        pinned = name
                state = httpx.get(url + "/admin/adapters/support-robotic/canary", headers=AUTH).json()
                if state["status"] != "running":
                    break
        assert state["status"] == "rolled_back", state["test"]
        assert wave < MAX_SESSIONS - WAVE and served["support-robotic"] >= 1
        assert any(v == "worse" for v in state["test"]["verdict"].values())
        # after the rollback nobody is sent to the canary, including its own sessions
        assert chat(url, pinned, "Thanks. Anything else?") == "support-friendly"
        assert all(chat(url, f"after-{k}", QUESTIONS[k]) == "support-friendly" for k in range(4))
        metrics = httpx.get(url + "/metrics").text
        assert 'tonewatch_canary_state{status="rolled_back"} 1.0' in metrics
        assert 'tonewatch_canary_decisions_total{decision="rolled_back"} 1.0' in metrics
        turns = state["test"]["turns"]
    finally:
        srv.stop()
    again = start(env)  # the canary's configuration and statistics are in the store
    try:
        state = httpx.get(again.base_url + "/admin/adapters/support-robotic/canary", headers=AUTH).json()
        assert state["status"] == "rolled_back" and state["test"]["turns"] == turns
        assert httpx.delete(again.base_url + "/admin/adapters/support-robotic/canary", headers=AUTH).status_code == 200
    finally:
        again.stop()


def test_requests_that_name_a_model_are_not_part_of_a_canary(env, tmp_path):
    srv = start({**env, "TONEWATCH_DB_PATH": str(tmp_path / "named.db")})
    try:
        url = srv.base_url
        body = {"share": 0.5, "persona": "support-friendly"}
        assert httpx.post(url + "/admin/adapters/support-robotic/canary", json=body, headers=AUTH).status_code == 200
        for i in range(6):
            r = httpx.post(
                url + "/v1/chat/completions",
                json={
                    "model": "support-formal",
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 4,
                    "session_id": f"named-{i}",
                },
                timeout=60,
            )
            assert r.json()["model"] == "support-formal"
        time.sleep(0.2)
        state = httpx.get(url + "/admin/adapters/support-robotic/canary", headers=AUTH).json()
        assert state["test"]["turns"] == {"canary": 0, "current": 0}
        stopped = httpx.delete(url + "/admin/adapters/support-robotic/canary", headers=AUTH).json()
        assert stopped["status"] == "stopped"
    finally:
        srv.stop()
