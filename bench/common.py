"""Shared benchmark helpers: a real server process, closed-loop load, summaries, result files."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

PROMPTS = [
    "Write a detailed story about a lighthouse keeper who finds a message in a bottle.",
    "Explain step by step how to return a damaged parcel to an online store.",
    "Describe a busy train station in the morning in vivid detail.",
    "Write a long letter to a friend about your summer holiday by the sea.",
    "Explain how a refrigerator works to a curious ten year old.",
    "Tell a long fairy tale about a fox and a crow who become friends.",
]


def greedy_session_body(tag: str, max_tokens: int):
    """A closed_loop body_for: greedy chat requests over PROMPTS, one session per client (named by `tag`)."""

    def body_for(idx: int, j: int) -> dict:
        return {
            "messages": [{"role": "user", "content": PROMPTS[(idx + j) % len(PROMPTS)]}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "session_id": f"{tag}-{idx}",
        }

    return body_for


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(latencies: list[float]) -> dict:
    return {
        "n": len(latencies),
        "p50": statistics.median(latencies) if latencies else None,
        "p99": percentile(latencies, 0.99),
        "mean": statistics.fmean(latencies) if latencies else None,
    }


async def closed_loop(
    url: str, concurrency: int, requests_per_client: int, body_for, path: str = "/v1/chat/completions"
) -> dict:
    """`concurrency` clients each POST ``path`` back to back; returns latencies and token counts (completion tokens
    from the answers' usage; 0 for answers without one, such as /v1/score)."""
    latencies: list[float] = []
    tokens = 0
    failures = 0

    async def client(idx: int, http: httpx.AsyncClient):
        nonlocal tokens, failures
        for j in range(requests_per_client):
            body = body_for(idx, j)
            t0 = time.perf_counter()
            r = await http.post(url + path, json=body)
            if r.status_code != 200:
                failures += 1
                continue
            latencies.append(time.perf_counter() - t0)
            tokens += (r.json().get("usage") or {}).get("completion_tokens", 0)

    async with httpx.AsyncClient(timeout=600) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "wall_s": wall,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "failures": failures,
        "latency_s": summary(latencies),
        "per_token_s": (statistics.median(latencies) / (tokens / len(latencies))) if latencies and tokens else None,
    }


def machine() -> dict:
    """The CPU a result came from (figures differ between machines of one kind: Xeon with AVX-512, EPYC with AVX2)."""
    from app.engine.cpu import PlatformReport

    report = PlatformReport.detect("cpu")
    return {"cpu": report.cpu, "torch_capability": report.torch_capability, "features": report.features}


def write(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    return path
