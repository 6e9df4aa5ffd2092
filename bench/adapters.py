"""Adapter benchmark: load/activate latency, p99 under a swap storm vs quiet, throughput across 3 adapters."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import PROMPTS, RESULTS, closed_loop, summary, write
from bench.peers import Tonewatch

TOKEN = "bench-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = "SmolLM2-135M-Instruct"
ADAPTERS = ["bench-a", "bench-b", "bench-c"]
MAX_TOKENS = 32


def make_adapters(root: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from app.config import Settings
    from app.engine.provision import load_base_model, resolve_base_model

    settings = Settings()
    model, _ = load_base_model(resolve_base_model(settings.base_model), settings.model_cache_dir, "cpu", "auto")
    for i, name in enumerate([*ADAPTERS, "probe"]):
        peft_model = get_peft_model(
            model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]), adapter_name="default"
        )
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for pname, p in peft_model.named_parameters():
                if "lora_" in pname:
                    p.copy_(0.02 * torch.randn(p.shape, generator=gen))
        folder = root / ("staged" if name == "probe" else "") / name
        peft_model.save_pretrained(folder)
        model = peft_model.unload()


def body_for(models: list[str]):
    def body(idx: int, j: int) -> dict:
        return {
            "model": models[(idx + j) % len(models)],
            "messages": [{"role": "user", "content": PROMPTS[(idx + j) % len(PROMPTS)]}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
        }

    return body


async def swap_storm(url: str, stop: asyncio.Event) -> int:
    swaps = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        while not stop.is_set():
            await http.post(f"/admin/adapters/{ADAPTERS[swaps % 3]}/activate", headers=AUTH)
            swaps += 1
            await asyncio.sleep(0.05)
    return swaps


async def load_activate_latency(url: str, n: int = 10) -> dict:
    loads, activations = [], []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for _ in range(n):
            t0 = time.perf_counter()
            r = await http.post("/admin/adapters", headers=AUTH, json={"name": "probe", "path": "staged/probe"})
            loads.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            t0 = time.perf_counter()
            await http.post("/admin/adapters/probe/activate", headers=AUTH)
            activations.append(time.perf_counter() - t0)
            await http.post(f"/admin/adapters/{BASE}/activate", headers=AUTH)
            await http.delete("/admin/adapters/probe", headers=AUTH)
    return {"load_s": summary(loads), "activate_s": summary(activations)}


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_adapters(root)
        server = Tonewatch(
            port=8766,
            TONEWATCH_ADAPTER_ROOT=str(root),
            TONEWATCH_ADMIN_TOKEN=TOKEN,
            TONEWATCH_DB_PATH=str(root / "tw.db"),
            TONEWATCH_SCORE_RESPONSES="false",
        )
        try:
            result: dict = {"max_tokens": MAX_TOKENS}
            result["admin"] = asyncio.run(load_activate_latency(server.url))
            mixed = body_for(ADAPTERS)
            asyncio.run(closed_loop(server.url, 4, 1, mixed))  # warm-up
            c1 = asyncio.run(closed_loop(server.url, 1, 6, mixed))
            c16 = asyncio.run(closed_loop(server.url, 16, 2, mixed))
            result["concurrency_1"], result["concurrency_16_three_adapters"] = c1, c16
            result["throughput_ratio_16_vs_1"] = c16["tokens_per_s"] / c1["tokens_per_s"]

            default_body = body_for(["default"])
            quiet = asyncio.run(closed_loop(server.url, 8, 3, default_body))

            async def stormy():
                stop = asyncio.Event()
                storm = asyncio.ensure_future(swap_storm(server.url, stop))
                load = await closed_loop(server.url, 8, 3, default_body)
                stop.set()
                load["swaps"] = await storm
                return load

            storm = asyncio.run(stormy())
            result["quiet"], result["swap_storm"] = quiet, storm
            result["p99_ratio_storm_vs_quiet"] = storm["latency_s"]["p99"] / quiet["latency_s"]["p99"]
        finally:
            server.close()
    write("adapters", result)
    plot(result)
    print(
        f"  load p50 {result['admin']['load_s']['p50'] * 1000:.0f} ms, activate p50 "
        f"{result['admin']['activate_s']['p50'] * 1000:.1f} ms, 16-vs-1 {result['throughput_ratio_16_vs_1']:.1f}x, "
        f"storm p99 ratio {result['p99_ratio_storm_vs_quiet']:.2f} ({storm['swaps']} swaps)"
    )
    return result


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.bar(
        ["c=1", "c=16 (3 adapters)"],
        [result["concurrency_1"]["tokens_per_s"], result["concurrency_16_three_adapters"]["tokens_per_s"]],
    )
    a.set_ylabel("tokens / s")
    a.set_title(f"mixed-adapter throughput ({result['throughput_ratio_16_vs_1']:.1f}x)")
    labels = ["quiet", "swap storm"]
    b.bar([f"{x} p50" for x in labels], [result["quiet"]["latency_s"]["p50"], result["swap_storm"]["latency_s"]["p50"]])
    b.bar([f"{x} p99" for x in labels], [result["quiet"]["latency_s"]["p99"], result["swap_storm"]["latency_s"]["p99"]])
    b.set_ylabel("request latency (s)")
    b.set_title(f"swaps: p99 ratio {result['p99_ratio_storm_vs_quiet']:.2f}")
    b.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(RESULTS / "adapters.png", dpi=100)
