"""Hot-swappable adapters on the real bundled model: admin API, routing, mixed batches, refusals."""

import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.support.adapter_factory import (
    corrupt_safetensors,
    make_adapter,
    make_pickle_only,
    make_wrong_shape_adapter,
)
from tests.support.greedy import assert_same_greedy

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = "SmolLM2-135M-Instruct"
PROMPT = [{"role": "user", "content": "Where is my order? It is late."}]


@pytest.fixture(scope="module")
def root(tmp_path_factory, bundled) -> Path:
    model, _, _ = bundled
    root = tmp_path_factory.mktemp("adapters")
    make_adapter(root / "boot-lora", model, kind="lora", r=8, alpha=16, seed=1)
    make_adapter(root / "broken-at-boot", model, kind="lora", r=4, seed=2)
    corrupt_safetensors(root / "broken-at-boot")
    staged = root / "staged"
    make_adapter(staged / "lora-a", model, kind="lora", r=8, alpha=16, seed=3)
    make_adapter(staged / "lora-b", model, kind="lora", r=4, alpha=8, seed=4, targets=("q_proj", "k_proj", "o_proj"))
    make_adapter(staged / "dora-c", model, kind="dora", r=8, alpha=16, seed=5)
    make_adapter(staged / "zero", model, kind="lora", r=4, zero_b=True)
    make_adapter(staged / "loha-d", model, kind="loha", r=4, alpha=8, seed=9)
    make_adapter(staged / "ada-e", model, kind="adalora", r=4, alpha=8, seed=10)
    make_adapter(staged / "big-rank", model, kind="lora", r=128, alpha=16, seed=6)
    make_adapter(staged / "corrupt", model, kind="lora", r=4, seed=7)
    corrupt_safetensors(staged / "corrupt")
    make_wrong_shape_adapter(staged / "wrong-shape")
    make_pickle_only(staged / "pickled", model)
    (root.parent / "outside").mkdir(exist_ok=True)
    make_adapter(root.parent / "outside" / "evil", model, kind="lora", r=4, seed=8)
    (staged / "escape").symlink_to(root.parent / "outside" / "evil")
    return root


@pytest.fixture(scope="module")
def client(root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapters-db")
    settings = Settings(
        adapter_root=root, db_path=tmp / "tw.db", admin_token=TOKEN, max_wait_ms=50, max_adapter_rank=64
    )
    with TestClient(create_app(settings)) as c:
        yield c


def chat(client, model=None, **kw):
    body = {"messages": PROMPT, "max_tokens": 12, "temperature": 0, **kw}
    if model is not None:
        body["model"] = model
    return client.post("/v1/chat/completions", json=body)


def snapshot(client):
    return client.get("/admin/adapters", headers=AUTH).json(), client.get("/v1/models").json()["data"]


def test_startup_loads_good_adapters_and_skips_broken(client):
    names = {a["name"] for a in client.get("/admin/adapters", headers=AUTH).json()["data"]}
    assert names == {"boot-lora"}


def test_load_route_list_and_attribution(client):
    for name in ("lora-a", "lora-b", "dora-c"):
        r = client.post("/admin/adapters", headers=AUTH, json={"name": name, "path": f"staged/{name}"})
        assert r.status_code == 200, r.text
    listing = {a["name"]: a for a in client.get("/admin/adapters", headers=AUTH).json()["data"]}
    assert listing["dora-c"]["type"] == "dora" and listing["dora-c"]["mixable"] is False
    assert listing["lora-a"]["rank"] == 8 and listing["lora-a"]["alpha"] == 16
    assert listing["lora-b"]["target_modules"] and listing["lora-a"]["trainable_params"] > 0
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models["lora-a"]["parent"] == BASE and BASE in models
    base_text = chat(client, BASE).json()["choices"][0]["message"]["content"]
    for name in ("lora-a", "dora-c"):
        r = chat(client, name)
        assert r.json()["model"] == name
        assert r.json()["choices"][0]["message"]["content"] != base_text  # the adapter changes the output
    assert chat(client, "nope").status_code == 404


def greedy_choice(client, model):
    r = chat(client, model, logprobs=True, top_logprobs=2)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def test_mixed_batch_matches_solo_outputs(client):
    models = [BASE, "lora-a", "lora-b", "dora-c", "boot-lora"]
    solo = {m: greedy_choice(client, m) for m in models}
    before = client.get("/metrics").text
    results: dict[str, list[dict]] = {m: [] for m in models}

    def worker(m):
        results[m].append(greedy_choice(client, m))

    threads = [threading.Thread(target=worker, args=(m,)) for m in models * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for m in models:
        assert len(results[m]) == 2, m
        for choice in results[m]:
            assert_same_greedy(solo[m], choice)
    # the requests really shared decode steps
    after = client.get("/metrics").text
    assert _batch_sum(after) - _batch_sum(before) > _batch_count(after) - _batch_count(before)


def _batch_sum(text):
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith("tonewatch_batch_size_sum")))


def _batch_count(text):
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith("tonewatch_batch_size_count")))


def test_non_lora_types_are_served_as_exact_lora(client):
    for name, kind in (("loha-d", "loha"), ("ada-e", "adalora")):
        r = client.post("/admin/adapters", headers=AUTH, json={"name": name, "path": f"staged/{name}"})
        assert r.status_code == 200, r.text
        assert r.json()["type"] == kind and r.json()["served_as"] == "lora" and r.json()["mixable"] is True
        assert chat(client, name).json()["model"] == name  # (logit-level equivalence: test_adapter_convert.py)
    results: dict[str, list[dict]] = {m: [] for m in ("loha-d", "ada-e", "lora-a")}

    def worker(m):
        results[m].append(greedy_choice(client, m))

    solo = {m: greedy_choice(client, m) for m in results}
    threads = [threading.Thread(target=worker, args=(m,)) for m in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for m, choices in results.items():
        assert len(choices) == 1
        assert_same_greedy(solo[m], choices[0])


def test_activate_swaps_default_and_guards_unload(client):
    r = client.post("/admin/adapters/lora-a/activate", headers=AUTH)
    assert r.status_code == 200 and r.json()["active"] == "lora-a"
    assert chat(client).json()["model"] == "lora-a"
    assert chat(client, "default").json()["model"] == "lora-a"
    assert client.delete("/admin/adapters/lora-a", headers=AUTH).status_code == 409
    assert client.post(f"/admin/adapters/{BASE}/activate", headers=AUTH).json()["active"] == BASE
    assert chat(client).json()["model"] == BASE
    text = client.get("/metrics").text
    assert "tonewatch_adapter_swaps_total 2.0" in text
    assert 'tonewatch_active_adapter{adapter="lora-a"} 0.0' in text


def test_profile(client):
    r = client.get("/admin/adapters/lora-b/profile", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    modules = body["modules"]
    assert {m["module"].rsplit(".", 1)[-1] for m in modules} == {"q_proj", "k_proj", "o_proj"}
    q = next(m for m in modules if m["module"].endswith("q_proj"))
    assert 0 < q["effective_rank"] <= 4 + 1e-6 and len(q["head_norms"]) == 9
    assert body["totals"]["modules"] == len(modules) and body["layers"]


BAD = [
    ("traversal", "../../etc"),
    ("absolute", "/etc"),
    ("missing", "staged/does-not-exist"),
    ("corrupt", "staged/corrupt"),
    ("wrong-shape", "staged/wrong-shape"),
    ("pickled", "staged/pickled"),
    ("zero", "staged/zero"),
    ("big-rank", "staged/big-rank"),
    ("escape", "staged/escape"),
]


@pytest.mark.parametrize(("name", "path"), BAD)
def test_bad_adapters_are_refused_and_change_nothing(client, name, path):
    before = snapshot(client)
    base_text = chat(client, BASE).json()["choices"][0]["message"]["content"]
    r = client.post("/admin/adapters", headers=AUTH, json={"name": name, "path": path, "activate": True})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["message"]
    assert snapshot(client) == before
    assert chat(client, BASE).json()["choices"][0]["message"]["content"] == base_text


def test_duplicate_and_reserved_names(client):
    assert (
        client.post("/admin/adapters", headers=AUTH, json={"name": "lora-a", "path": "staged/lora-a"}).status_code
        == 409
    )
    assert (
        client.post("/admin/adapters", headers=AUTH, json={"name": "default", "path": "staged/lora-a"}).status_code
        == 409
    )


PEFT_SAFE_NAMES = ["b", "m", "l", "q", "w", "model", "lora_A", "weight"]


@pytest.mark.parametrize("name", PEFT_SAFE_NAMES)
def test_short_and_module_like_names_load_and_serve(client, name):
    """Names that are substrings of PEFT keys ('model' is in every key) are matched exactly, not as substrings."""
    if "names-ref" not in {a["name"] for a in client.get("/admin/adapters", headers=AUTH).json()["data"]}:
        assert (
            client.post(
                "/admin/adapters", headers=AUTH, json={"name": "names-ref", "path": "staged/lora-a"}
            ).status_code
            == 200
        )
    r = client.post("/admin/adapters", headers=AUTH, json={"name": name, "path": "staged/lora-a"})
    assert r.status_code == 200, r.text
    answer = chat(client, name).json()
    assert answer["model"] == name
    # the same files as lora-a: the same weights were really loaded under this name
    reference = chat(client, "names-ref").json()["choices"][0]["message"]["content"]
    assert answer["choices"][0]["message"]["content"] == reference
    assert client.delete(f"/admin/adapters/{name}", headers=AUTH).status_code == 200


@pytest.mark.parametrize("name", ["acme.v2", "forward", "to", "training", "base", "default", BASE])
def test_names_peft_cannot_hold_are_refused_at_validation(client, name):
    before = snapshot(client)
    r = client.post("/admin/adapters", headers=AUTH, json={"name": name, "path": "staged/lora-a"})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["param"] == "name"
    assert snapshot(client) == before


def test_vllm_aliases_and_unload(client):
    r = client.post("/v1/load_lora_adapter", headers=AUTH, json={"lora_name": "vllm-a", "lora_path": "staged/lora-a"})
    assert r.status_code == 200, r.text
    assert chat(client, "vllm-a").json()["model"] == "vllm-a"
    assert client.post("/v1/unload_lora_adapter", headers=AUTH, json={"lora_name": "vllm-a"}).status_code == 200
    assert chat(client, "vllm-a").status_code == 404
    assert client.post("/v1/unload_lora_adapter", json={"lora_name": "lora-b"}).status_code == 401


def test_unloading_everything_restores_the_base(client):
    base_text = chat(client, BASE).json()["choices"][0]["message"]["content"]
    for name in [a["name"] for a in client.get("/admin/adapters", headers=AUTH).json()["data"]]:
        assert client.delete(f"/admin/adapters/{name}", headers=AUTH).status_code == 200
    assert chat(client, BASE).json()["choices"][0]["message"]["content"] == base_text
    assert json.loads(client.get("/v1/models").text)["data"][0]["id"] == BASE
    assert "tonewatch_adapters_loaded 0.0" in client.get("/metrics").text
