"""Three `tonewatch serve` replicas on one real Redis of our own, behind a real nginx on loopback, behave as one
service: a session round-robined across them keeps every turn in order with one drift state (equal to a single
replica's), concurrent turns of one session from all three are all counted, persona and adapter changes made
through one replica reach the others within 2 s without split brain, a killed replica loses no acknowledged
turn, and a Redis restart is survived by all."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

pytestmark = [pytest.mark.model, pytest.mark.slow]
TOKEN = "replica-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FRIENDLY = "Thanks so much for your patience! I'm happy to help, have a lovely day!"
ROBOTIC = "Request processed. Ticket closed. No further action."
SCRIPT = [
    FRIENDLY,
    FRIENDLY,
    ROBOTIC,
    ROBOTIC,
    ROBOTIC,
    FRIENDLY,
    ROBOTIC,
    FRIENDLY,
    FRIENDLY,
    ROBOTIC,
    FRIENDLY,
    FRIENDLY,
]
# replicas converge within a poll interval or two; this bound only catches one that never does (speed is not tested)
CONVERGE_S = 30.0


class Cluster:
    def __init__(self, tmp, redis_server, bundled):
        from tests.support.adapter_factory import make_adapter
        from tests.support.servers import Nginx, ServerProcess, free_port

        model, _, _ = bundled
        self.redis = redis_server(persistent=True)
        self.root = tmp / "adapters"
        make_adapter(self.root / "lora-x", model, kind="lora", r=4, alpha=8, seed=31)
        make_adapter(self.root / "lora-y", model, kind="lora", r=4, alpha=8, seed=32)
        (self.root / "manifest.json").write_text('{"adapters": []}')  # start with none: all come through the API
        self.replicas = []
        for i in range(3):
            env = {
                "TONEWATCH_REDIS_URL": self.redis.url,
                "TONEWATCH_DB_PATH": str(tmp / f"r{i}.db"),
                "TONEWATCH_ADAPTER_ROOT": str(self.root),
                "TONEWATCH_ADMIN_TOKEN": TOKEN,
                "TONEWATCH_REPLICA_NAME": f"r{i}",
                "TONEWATCH_MAX_WAIT_MS": "20",
            }
            self.replicas.append(ServerProcess(env, free_port()))
        for r in self.replicas:
            r.wait_ready(120)
        self.nginx = Nginx([r.port for r in self.replicas], tmp / "nginx")
        self.url = self.nginx.base_url

    def stop(self):
        self.nginx.stop()
        for r in self.replicas:
            r.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, bundled, request):
    from tests.support.redis_servers import RedisServer
    from tests.support.servers import free_port

    servers = []

    def make(persistent=True):
        server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"), persistent)
        servers.append(server)
        server.start()
        return server

    c = Cluster(tmp_path_factory.mktemp("replicas"), make, bundled)
    try:
        yield c
    finally:
        c.stop()
        for s in servers:
            s.kill()


def score(url, session, i, timeout=30):
    return httpx.post(
        url + "/v1/score",
        json={"texts": [f"{SCRIPT[i % len(SCRIPT)]} #{i}"], "session_id": session, "persona": "support-friendly"},
        timeout=timeout,
    )


def turns(url, session):
    r = httpx.get(f"{url}/v1/sessions/{session}", params={"limit": 1000}, headers=AUTH, timeout=30)
    return r.json()["turns"] if r.status_code == 200 else []


def drift(url, session):
    body = httpx.get(f"{url}/v1/sessions/{session}/drift", headers=AUTH, timeout=30).json()
    return {k: body[k] for k in ("turns", "cusum", "score", "alert", "detector")}


def wait_until(check, timeout=CONVERGE_S):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError("did not converge in time")


def test_round_robin_session_keeps_order_and_one_drift_state(cluster):
    served_by = set()
    for i in range(len(SCRIPT)):
        r = score(cluster.url, "rr-1", i)
        assert r.status_code == 200
        served_by.add(r.headers["x-tonewatch-replica"])
    assert served_by == {"r0", "r1", "r2"}  # really spread over the three
    for i in range(len(SCRIPT)):
        assert score(cluster.replicas[0].base_url, "single-1", i).status_code == 200
    got = turns(cluster.url, "rr-1")
    assert [t["seq"] for t in got] == list(range(1, len(SCRIPT) + 1))
    assert [t["response"] for t in got] == [f"{SCRIPT[i]} #{i}" for i in range(len(SCRIPT))]
    assert drift(cluster.url, "rr-1") == drift(cluster.url, "single-1")


def test_thirty_concurrent_turns_of_one_session_from_three_replicas(cluster):
    async def main():
        async with httpx.AsyncClient(timeout=60) as http:

            async def one(i):
                url = cluster.replicas[i % 3].base_url
                return await http.post(
                    url + "/v1/score", json={"texts": [f"turn {i}: {FRIENDLY}"], "session_id": "burst-1"}
                )

            return await asyncio.gather(*(one(i) for i in range(30)))

    results = asyncio.run(main())
    assert all(r.status_code == 200 for r in results)
    got = turns(cluster.url, "burst-1")
    assert sorted(t["seq"] for t in got) == list(range(1, 31))
    assert sorted(t["response"] for t in got) == sorted(f"turn {i}: {FRIENDLY}" for i in range(30))
    assert drift(cluster.url, "burst-1")["turns"] == 30  # every turn counted once by the detector


def test_persona_and_adapter_changes_reach_every_replica(cluster):
    a, b, c = (r.base_url for r in cluster.replicas)
    persona = {
        "exemplars": [
            "Hi there! Happy to help.",
            "Thanks so much, you're a star!",
            "No worries at all!",
            "Great question, let me check!",
            "Lovely to hear from you!",
        ]
    }
    assert httpx.put(a + "/admin/personas/acme-voice", json=persona, headers=AUTH, timeout=60).status_code == 200
    wait_until(
        lambda: all(httpx.get(u + "/admin/personas/acme-voice", headers=AUTH).status_code == 200 for u in (b, c))
    )
    r = httpx.post(b + "/admin/adapters", json={"name": "lora-x", "path": "lora-x"}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text

    def served_everywhere():
        return all("lora-x" in {m["id"] for m in httpx.get(u + "/v1/models").json()["data"]} for u in (a, c))

    wait_until(served_everywhere)
    answer = httpx.post(
        c + "/v1/chat/completions",
        json={"model": "lora-x", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.json()["model"] == "lora-x"
    assert httpx.post(c + "/admin/adapters/lora-x/activate", headers=AUTH, timeout=60).status_code == 200

    def default_everywhere():
        return all(httpx.get(u + "/admin/adapters", headers=AUTH).json()["active"] == "lora-x" for u in (a, b))

    wait_until(default_everywhere)
    versions = {httpx.get(u + "/readyz").json()["control"]["version"] for u in (a, b, c)}
    assert len(versions) == 1  # every replica reports the same applied version


def test_concurrent_activations_never_split_the_default(cluster):
    a, b, c = (r.base_url for r in cluster.replicas)
    assert (
        httpx.post(
            a + "/admin/adapters", json={"name": "lora-y", "path": "lora-y"}, headers=AUTH, timeout=60
        ).status_code
        == 200
    )
    wait_until(lambda: all("lora-y" in {m["id"] for m in httpx.get(u + "/v1/models").json()["data"]} for u in (b, c)))
    for _ in range(3):

        async def race():
            async with httpx.AsyncClient(timeout=60) as http:
                return await asyncio.gather(
                    http.post(a + "/admin/adapters/lora-x/activate", headers=AUTH),
                    http.post(b + "/admin/adapters/lora-y/activate", headers=AUTH),
                )

        assert all(r.status_code == 200 for r in asyncio.run(race()))

        def agreed():
            actives = {httpx.get(u + "/admin/adapters", headers=AUTH).json()["active"] for u in (a, b, c)}
            return len(actives) == 1

        wait_until(agreed)


def test_a_killed_replica_loses_no_acknowledged_turn(cluster):
    acknowledged = []
    for i in range(30):
        if i == 10:
            cluster.replicas[1].proc.kill()  # a replica dies mid-traffic
        r = score(cluster.url, "kill-1", i, timeout=10)
        if r.status_code == 200:
            acknowledged.append(f"{SCRIPT[i % len(SCRIPT)]} #{i}")
    assert len(acknowledged) >= 28  # nginx moves on to the live replicas
    got = [t["response"] for t in turns(cluster.url, "kill-1")]
    assert got == acknowledged  # every acknowledged turn, in order, nothing else


def test_redis_restart_is_survived_by_every_replica(cluster):
    live = [r for r in cluster.replicas if r.proc.poll() is None]
    cluster.redis.kill()
    for i in range(6):
        assert score(live[i % len(live)].base_url, "restart-1", i).status_code == 200
    assert all(httpx.get(r.base_url + "/readyz").json()["status"] == "degraded" for r in live)
    cluster.redis.start()

    def recovered():
        return all(httpx.get(r.base_url + "/readyz").json()["status"] == "ready" for r in live)

    wait_until(recovered, timeout=20)
    assert [t["seq"] for t in turns(cluster.url, "restart-1")] == list(range(1, 7))
