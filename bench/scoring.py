"""Scoring benchmark: /v1/score throughput at batch 32, and what scoring adds to a 64-token chat completion."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import PROMPTS, RESULTS, Server, summary, write

DATA = Path(__file__).resolve().parent.parent / "data" / "style" / "graded_formality.jsonl"


def texts(n: int) -> list[str]:
    rows = [json.loads(line)["text"] for line in DATA.read_text().splitlines()]
    return [rows[i % len(rows)] for i in range(n)]


async def score_throughput(url: str, batch: int = 32, batches: int = 24, in_flight: int = 2) -> dict:
    """Batches of 32 texts, `in_flight` requests outstanding at a time (a client that waits for each answer
    before sending the next measures its own round trip, not the server)."""
    pool = texts(batch * batches)
    latencies = []
    queue = list(range(batches))
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await http.post("/v1/score", json={"texts": pool[:batch]})

        async def sender():
            while queue:
                i = queue.pop()
                s = time.perf_counter()
                r = await http.post("/v1/score", json={"texts": pool[i * batch:(i + 1) * batch]})
                assert r.status_code == 200
                latencies.append(time.perf_counter() - s)

        t0 = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(in_flight)))
        wall = time.perf_counter() - t0
    return {"batch": batch, "batches": batches, "in_flight": in_flight, "texts_per_s": batch * batches / wall,
            "batch_latency_s": summary(latencies)}


async def chat_latency(url: str, n: int = 8) -> list[float]:
    out = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for i in range(n):
            t0 = time.perf_counter()
            r = await http.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": 64,
                "temperature": 0, "persona": "support-friendly"})
            assert r.status_code == 200
            out.append(time.perf_counter() - t0)
    return out


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result: dict = {}
        on = Server(port=8767, TONEWATCH_DB_PATH=str(Path(tmp) / "a.db"), TONEWATCH_ADAPTER_ROOT=tmp)
        try:
            result["score"] = asyncio.run(score_throughput(on.url))
            asyncio.run(chat_latency(on.url, 2))
            with_scoring = asyncio.run(chat_latency(on.url))
        finally:
            on.close()
        off = Server(port=8768, TONEWATCH_DB_PATH=str(Path(tmp) / "b.db"), TONEWATCH_ADAPTER_ROOT=tmp,
                     TONEWATCH_SCORE_RESPONSES="false")
        try:
            asyncio.run(chat_latency(off.url, 2))
            without = asyncio.run(chat_latency(off.url))
        finally:
            off.close()
    result["chat_64_tokens_with_scoring_s"] = summary(with_scoring)
    result["chat_64_tokens_without_scoring_s"] = summary(without)
    result["scoring_overhead"] = statistics.median(with_scoring) / statistics.median(without) - 1
    write("scoring", result)
    print(f"  score: {result['score']['texts_per_s']:.0f} texts/s at batch 32; chat overhead "
          f"{result['scoring_overhead'] * 100:.1f}%")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.bar(["/v1/score, batch 32"], [result["score"]["texts_per_s"]])
    a.axhline(200, ls="--", c="grey")
    a.set_ylabel("texts / s")
    b.bar(["chat, scoring off", "chat, scoring on"], [statistics.median(without), statistics.median(with_scoring)])
    b.set_ylabel("median latency, 64 tokens (s)")
    b.set_title(f"scoring adds {result['scoring_overhead'] * 100:.1f}%")
    fig.tight_layout()
    fig.savefig(RESULTS / "scoring.png", dpi=100)
    return result
