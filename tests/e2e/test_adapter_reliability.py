"""8 clients generate across adapters while an operator runs a fixed number of cycles: swap the default, and every
third cycle unload and reload a spare adapter that two of the clients keep requesting (and ask the reloaded spare
once itself). Zero failed requests for adapters that stay loaded, every response attributed to the adapter that
served it, and requests for the spare get either its answer or a clean 404 model_not_found while it is away (never
a 5xx, never another adapter's answer). Counted in cycles, not seconds: a slower CPU runs the same storm, longer."""

import asyncio

import httpx
import pytest

from tests.support.adapter_factory import make_adapter
from tests.support.servers import ServerProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = "SmolLM2-135M-Instruct"
CYCLES = 24  # operator cycles: 24 activations, 8 unload/reload rounds of the spare


@pytest.fixture(scope="module")
def server(tmp_path_factory, bundled):
    model, _, _ = bundled
    root = tmp_path_factory.mktemp("rel-adapters")
    for i, name in enumerate(["ad-1", "ad-2", "ad-3"]):
        make_adapter(root / name, model, kind="lora", r=8, alpha=16, seed=10 + i)
    make_adapter(root / "spares" / "spare", model, kind="lora", r=4, alpha=8, seed=20)
    srv = ServerProcess(
        {
            "TONEWATCH_ADAPTER_ROOT": str(root),
            "TONEWATCH_ADMIN_TOKEN": TOKEN,
            "TONEWATCH_DB_PATH": str(root.parent / "tw.db"),
        },
        free_port(),
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


async def _ask(http, model, j):
    r = await http.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": f"Hello number {j}"}],
            "max_tokens": 8,
            "temperature": 0,
        },
    )
    body = r.json()
    return (model, r.status_code, body.get("model") if r.status_code == 200 else body["error"]["code"])


async def _client(http, idx, done, outcomes):
    # two clients keep asking for the spare the operator keeps unloading and reloading
    models = ["spare", "ad-1", "spare", BASE] if idx < 2 else ["ad-1", "ad-2", "ad-3", BASE, "default"]
    j = 0
    while not done.is_set():
        model = models[(idx + j) % len(models)]
        j += 1
        outcomes.append(await _ask(http, model, j))


async def _operator(http, done, log):
    cycle = ["ad-1", "ad-2", "ad-3", BASE]
    try:
        for k in range(CYCLES):
            r = await http.post(f"/admin/adapters/{cycle[k % 4]}/activate", headers=AUTH)
            log.append(("activate", r.status_code))
            if k % 3 == 0:
                r = await http.delete("/admin/adapters/spare", headers=AUTH)
                log.append(("unload", r.status_code))
                r = await http.post("/admin/adapters", headers=AUTH, json={"name": "spare", "path": "spares/spare"})
                log.append(("load", r.status_code))
                log.append(("ask spare", (await _ask(http, "spare", -k))[1]))  # the reloaded spare serves
            await asyncio.sleep(0.3)
    finally:
        done.set()


def test_zero_failed_requests_during_swap_storm(server):
    async def main():
        outcomes, log = [], []
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
            r = await http.post("/admin/adapters", headers=AUTH, json={"name": "spare", "path": "spares/spare"})
            assert r.status_code == 200, r.text
            done = asyncio.Event()
            await asyncio.gather(_operator(http, done, log), *(_client(http, i, done, outcomes) for i in range(8)))
        return outcomes, log

    outcomes, log = asyncio.run(main())
    failures = [o for o in outcomes if o[1] != 200 and o[0] != "spare"]
    assert not failures, failures[:5]
    assert len(outcomes) >= 8  # every client got answers during the storm
    spare = [o for o in outcomes if o[0] == "spare"]
    assert all(status == 200 or (status == 404 and served == "model_not_found") for _, status, served in spare), spare
    for requested, status, served in outcomes:
        if status != 200:
            continue
        if requested == "default":
            assert served in {"ad-1", "ad-2", "ad-3", BASE}
        else:
            assert served == requested
    assert all(status == 200 for _, status in log), log
    assert sum(1 for op, _ in log if op == "activate") == CYCLES
    assert sum(1 for op, _ in log if op == "unload") == CYCLES // 3
    assert sum(1 for op, _ in log if op == "ask spare") == CYCLES // 3  # and each was served (all 200 above)
