"""Serving core benchmark: throughput and latency at concurrency 1/4/16 vs a bare model.generate loop."""

from __future__ import annotations

import asyncio
import statistics
import time

from bench.common import PROMPTS, RESULTS, closed_loop, write
from bench.peers import Tonewatch

MAX_TOKENS = 64


def bare_generate_per_token(n: int = 5) -> float:
    """Median seconds per token of plain `model.generate` at batch 1 (same model, same machine, same run)."""
    import torch

    from app.config import Settings
    from app.engine.provision import load_base_model, resolve_base_model

    settings = Settings()
    model, tok = load_base_model(resolve_base_model(settings.base_model), settings.model_cache_dir, "cpu", "auto")
    per_token = []
    for i in range(n):
        ids = tok.apply_chat_template(
            [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            t0 = time.perf_counter()
            out = model.generate(**ids, max_new_tokens=MAX_TOKENS, do_sample=False)
            dt = time.perf_counter() - t0
        per_token.append(dt / (out.shape[1] - ids["input_ids"].shape[1]))
    del model
    return statistics.median(per_token)


def body(idx: int, j: int) -> dict:
    return {
        "messages": [{"role": "user", "content": PROMPTS[(idx + j) % len(PROMPTS)]}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }


SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "maxLength": 200},
        "urgent": {"type": "boolean"},
        "steps": {"type": "array", "items": {"type": "string", "maxLength": 80}, "maxItems": 4},
    },
    "required": ["answer", "urgent", "steps"],
}


def constrained_body(idx: int, j: int) -> dict:
    return {
        **body(idx, j),
        "response_format": {"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA}},
    }


def constrained(url: str) -> dict:
    """Grammar cost: per-token time of a json_schema row alone vs a free row alone (alternated), and the tokens/s
    of 8 free clients with vs without 8 constrained clients in the same batches."""
    free_alone, json_alone = [], []
    for _ in range(2):
        free_alone.append(asyncio.run(closed_loop(url, 1, 3, body)))
        json_alone.append(asyncio.run(closed_loop(url, 1, 3, constrained_body)))
    free_only = [asyncio.run(closed_loop(url, 8, 2, body)) for _ in range(2)]

    async def mixed() -> dict:
        free, _ = await asyncio.gather(closed_loop(url, 8, 2, body), closed_loop(url, 8, 2, constrained_body))
        return free

    beside = [asyncio.run(mixed()) for _ in range(2)]
    per_token = statistics.median(r["per_token_s"] for r in free_alone)
    per_token_json = statistics.median(r["per_token_s"] for r in json_alone)
    return {
        "per_token_s_free": per_token,
        "per_token_s_json_schema": per_token_json,
        "grammar_cost_per_token": per_token_json / per_token - 1.0,
        "free_8_tokens_per_s_alone": statistics.median(r["tokens_per_s"] for r in free_only),
        "free_8_tokens_per_s_beside_8_constrained": statistics.median(r["tokens_per_s"] for r in beside),
        "failures": sum(r["failures"] for r in [*json_alone, *beside]),
    }


def run() -> dict:
    bare = bare_generate_per_token()
    server = Tonewatch(TONEWATCH_MAX_BATCH_SIZE="16")
    try:
        asyncio.run(closed_loop(server.url, 2, 1, body))  # warm-up
        levels = {}
        for concurrency, per_client in [(1, 6), (4, 3), (16, 2)]:
            levels[concurrency] = asyncio.run(closed_loop(server.url, concurrency, per_client, body))
            print(
                f"  concurrency {concurrency}: {levels[concurrency]['tokens_per_s']:.1f} tok/s, "
                f"p50 {levels[concurrency]['latency_s']['p50']:.2f}s"
            )
        grammar = constrained(server.url)
        print(f"  json_schema rows: {grammar['grammar_cost_per_token'] * 100:+.1f}% per token")
    finally:
        server.close()
    c1 = levels[1]
    result = {
        "max_tokens": MAX_TOKENS,
        "bare_generate_per_token_s": bare,
        "levels": levels,
        "throughput_ratio_16_vs_1": levels[16]["tokens_per_s"] / c1["tokens_per_s"],
        "server_overhead_per_token": c1["per_token_s"] / bare - 1.0,
        "constrained": grammar,
    }
    write("serving", result)
    plot(result)
    return result


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result["levels"]
    xs = sorted(int(k) for k in levels)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(xs, [levels[x]["tokens_per_s"] for x in xs], "o-")
    a.set_xlabel("concurrent clients")
    a.set_ylabel("generated tokens / s")
    a.set_title(f"throughput ({result['throughput_ratio_16_vs_1']:.1f}x at 16)")
    b.plot(xs, [levels[x]["latency_s"]["p50"] for x in xs], "o-", label="p50")
    b.plot(xs, [levels[x]["latency_s"]["p99"] for x in xs], "o-", label="p99")
    b.set_xlabel("concurrent clients")
    b.set_ylabel(f"request latency (s, {result['max_tokens']} tokens)")
    b.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "serving.png", dpi=100)
