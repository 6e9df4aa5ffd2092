"""Serving throughput of two commits side by side, for refactors that must not slow the engine down (±3 %).

`python -m bench.ab_serving OLD_REF [NEW_REF] [--score]` checks OLD_REF out in a temporary git worktree
(NEW_REF: this working tree), starts one server from each (`python -m app.cli serve` run from its own tree, so
each imports its own `app`; same venv, same converted model, the same fixed engine thread count so start-up probes
cannot choose differently), and sends both the same closed-loop load, 4 streams of 32 greedy tokens with a
session, in alternating rounds (old, new, new, old, ...) so a drift in the machine's speed hits both alike. Writes
bench/results/ab_serving.json.
With --score the load is /v1/score instead (8 texts per call, with a session): bench/results/ab_score.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import ROOT, closed_loop, greedy_session_body, machine, write

STREAMS = 4
REQUESTS_PER_STREAM = 6
ROUNDS = 6  # per arm
MAX_TOKENS = 32


def _body(tag: str):
    return greedy_session_body(f"ab-{tag}", MAX_TOKENS)


SCORE_TEXTS = [
    "Thanks so much for reaching out! I'm really happy to help you sort this out today.",
    "Request received. Ticket 4411 closed.",
    "We apologise for the inconvenience; a replacement has been dispatched and should arrive within three days.",
    "No worries at all! I've updated your address, and you're all set.",
]


async def score_loop(url: str, concurrency: int, requests_per_client: int, tag: str) -> dict:
    """`concurrency` clients post /v1/score (8 texts, a session each) back to back; texts/s and latency."""

    def body_for(idx: int, j: int) -> dict:
        return {"texts": SCORE_TEXTS * 2, "session_id": f"ab-{tag}-{idx}", "persona": "support-friendly"}

    result = await closed_loop(url, concurrency, requests_per_client, body_for, path="/v1/score")
    texts = result["latency_s"]["n"] * len(SCORE_TEXTS) * 2
    return {"tokens_per_s": texts / result["wall_s"], "latency_s": result["latency_s"], "failures": result["failures"]}


def _start(tree: Path, port: int, work: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TONEWATCH_MODEL_CACHE_DIR": str(ROOT / "models" / "cache"),
        "TONEWATCH_DB_PATH": str(work / "tw.db"),
        "TONEWATCH_ADAPTER_ROOT": str(work / "adapters"),
        "TONEWATCH_MAX_NEW_TOKENS": str(MAX_TOKENS),
        "TONEWATCH_ENGINE_THREADS": str(os.cpu_count() or 1),
        "PYTHONPATH": str(tree),
    }
    (work / "adapters").mkdir(parents=True, exist_ok=True)
    log = open(work / "server.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=tree, env=env, stdout=log, stderr=log
    )


def _wait(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def run(old_ref: str, new_ref: str | None = None, score: bool = False) -> dict:
    from tests.support.servers import free_port

    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for arm, ref in (("old", old_ref), ("new", new_ref)):
            if ref is None:
                trees[arm] = ROOT
                continue
            trees[arm] = Path(tmp) / f"tree-{arm}"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(trees[arm]), ref], cwd=ROOT, check=True)
        procs, urls = {}, {}
        try:
            for arm, tree in trees.items():
                port = free_port()
                urls[arm] = f"http://127.0.0.1:{port}"
                procs[arm] = _start(tree, port, Path(tmp) / f"work-{arm}")
                _wait(urls[arm], procs[arm])  # one at a time: start-ups do not time each other

            def load(arm: str, tag: str, n: int) -> dict:
                if score:
                    return asyncio.run(score_loop(urls[arm], STREAMS, n, tag))
                return asyncio.run(closed_loop(urls[arm], STREAMS, n, _body(tag)))

            for arm in trees:
                load(arm, f"warm-{arm}", 2)
            rounds: dict[str, list[dict]] = {"old": [], "new": []}
            order = [arm for i in range(ROUNDS) for arm in (("old", "new") if i % 2 == 0 else ("new", "old"))]
            for i, arm in enumerate(order):
                result = load(arm, f"{arm}-{i}", REQUESTS_PER_STREAM * (3 if score else 1))
                rounds[arm].append(result)
                unit = "texts/s" if score else "tok/s"
                rate, p50 = result["tokens_per_s"], result["latency_s"]["p50"]
                print(f"  round {i:2d} {arm}: {rate:.1f} {unit}, p50 {p50:.3f} s")
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(timeout=30)
            for tree in trees.values():
                if tree != ROOT:
                    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    summary = {
        arm: {
            "tokens_per_s_rounds": [round(r["tokens_per_s"], 2) for r in rs],
            "p50_s_rounds": [round(r["latency_s"]["p50"], 4) for r in rs],
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
            "p50_s": statistics.median(r["latency_s"]["p50"] for r in rs),
            "failures": sum(r["failures"] for r in rs),
        }
        for arm, rs in rounds.items()
    }
    old, new = summary["old"], summary["new"]
    result = {
        "old_ref": old_ref,
        "new_ref": new_ref or "working tree",
        "load": "/v1/score, 8 texts per call, rate in texts/s" if score else f"chat, {MAX_TOKENS} greedy tokens, tok/s",
        "streams": STREAMS,
        "rounds_per_arm": ROUNDS,
        **summary,
        "throughput_change_pct": round(100 * (new["tokens_per_s"] / old["tokens_per_s"] - 1), 2),
        "p50_change_pct": round(100 * (new["p50_s"] / old["p50_s"] - 1), 2),
        "machine": machine(),
    }
    write("ab_score" if score else "ab_serving", result)
    return result


if __name__ == "__main__":
    refs = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = run(refs[0], refs[1] if len(refs) > 1 else None, score="--score" in sys.argv)
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, dict)}, indent=2))
