"""Scoring benchmark: /v1/score throughput at batch 32, and what scoring adds to a 64-token chat completion."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import PROMPTS, RESULTS, summary, write
from bench.peers import Tonewatch

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
                r = await http.post("/v1/score", json={"texts": pool[i * batch : (i + 1) * batch]})
                assert r.status_code == 200
                latencies.append(time.perf_counter() - s)

        t0 = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(in_flight)))
        wall = time.perf_counter() - t0
    return {
        "batch": batch,
        "batches": batches,
        "in_flight": in_flight,
        "texts_per_s": batch * batches / wall,
        "batch_latency_s": summary(latencies),
    }


async def chat_latency(url: str, n: int = 8, max_tokens: int = 64) -> list[float]:
    out = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for i in range(n):
            t0 = time.perf_counter()
            r = await http.post(
                "/v1/chat/completions",
                json={
                    "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "persona": "support-friendly",
                },
            )
            assert r.status_code == 200
            out.append(time.perf_counter() - t0)
    return out


def maximal_score_body() -> dict:
    """The largest /v1/score call a default server takes: 256 texts of ~3,900 characters (~1 MB body)."""
    paragraph = " ".join(texts(80))
    return {"texts": [paragraph[:3900] for _ in range(256)]}


async def chat_beside_bulk(url: str, rounds: int = 2, n: int = 5) -> dict:
    """Chat latency (16 tokens, scored) quiet vs while maximal /v1/score calls run back to back, alternating."""
    quiet: list[float] = []
    loaded: list[float] = []
    bulk_calls: list[float] = []
    body = maximal_score_body()
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        for _ in range(rounds):
            quiet += await chat_latency(url, n, max_tokens=16)
            stop = asyncio.Event()

            async def bulk(stop: asyncio.Event = stop):
                while not stop.is_set():
                    t0 = time.perf_counter()
                    r = await http.post("/v1/score", json=body)
                    assert r.status_code == 200, r.text[:200]
                    bulk_calls.append(time.perf_counter() - t0)

            task = asyncio.create_task(bulk())
            await asyncio.sleep(1.0)  # the bulk call is being scored
            loaded += await chat_latency(url, n, max_tokens=16)
            stop.set()
            await task
    ratio = statistics.median(loaded) / statistics.median(quiet)
    return {
        "chat_16_tokens_quiet_s": summary(quiet),
        "chat_16_tokens_beside_bulk_s": summary(loaded),
        "p50_ratio": ratio,
        "goal_ratio": 2.0,
        "bulk_call_s": summary(bulk_calls),
        "bulk_call": "256 texts x 3,900 characters",
    }


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result: dict = {}
        on = Tonewatch(port=8767, TONEWATCH_DB_PATH=str(Path(tmp) / "a.db"), TONEWATCH_ADAPTER_ROOT=tmp)
        try:
            result["score"] = asyncio.run(score_throughput(on.url))
            asyncio.run(chat_latency(on.url, 2))
            with_scoring = asyncio.run(chat_latency(on.url))
            result["chat_beside_bulk_score"] = asyncio.run(chat_beside_bulk(on.url))
        finally:
            on.close()
        off = Tonewatch(
            port=8768,
            TONEWATCH_DB_PATH=str(Path(tmp) / "b.db"),
            TONEWATCH_ADAPTER_ROOT=tmp,
            TONEWATCH_SCORE_RESPONSES="false",
        )
        try:
            asyncio.run(chat_latency(off.url, 2))
            without = asyncio.run(chat_latency(off.url))
        finally:
            off.close()
    result["chat_64_tokens_with_scoring_s"] = summary(with_scoring)
    result["chat_64_tokens_without_scoring_s"] = summary(without)
    result["scoring_overhead"] = statistics.median(with_scoring) / statistics.median(without) - 1
    write("scoring", result)
    print(
        f"  score: {result['score']['texts_per_s']:.0f} texts/s at batch 32; chat overhead "
        f"{result['scoring_overhead'] * 100:.1f}%; chat beside a maximal score call "
        f"{result['chat_beside_bulk_score']['p50_ratio']:.2f}x quiet (goal <= 2x)"
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.5))
    a.bar(["/v1/score, batch 32"], [result["score"]["texts_per_s"]])
    a.axhline(200, ls="--", c="grey")
    a.set_ylabel("texts / s")
    b.bar(["chat, scoring off", "chat, scoring on"], [statistics.median(without), statistics.median(with_scoring)])
    b.set_ylabel("median latency, 64 tokens (s)")
    b.set_title(f"scoring adds {result['scoring_overhead'] * 100:.1f}%")
    bulk = result["chat_beside_bulk_score"]
    c.bar(
        ["chat quiet", "chat beside bulk /v1/score"],
        [bulk["chat_16_tokens_quiet_s"]["p50"], bulk["chat_16_tokens_beside_bulk_s"]["p50"]],
    )
    c.set_ylabel("median latency, 16 tokens (s)")
    c.set_title(f"{bulk['p50_ratio']:.2f}x quiet (goal <= 2x)")
    fig.tight_layout()
    fig.savefig(RESULTS / "scoring.png", dpi=100)
    return result
