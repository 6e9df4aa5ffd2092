"""Serving throughput of two commits side by side, for refactors that must not slow the engine down (±3 %).

`python -m bench.ab_serving OLD_REF [NEW_REF]` checks OLD_REF out in a temporary git worktree (NEW_REF: this working
tree), starts one server from each (`python -m app.cli serve` run from its own tree, so each imports its own `app`;
same venv, same converted model, the same fixed engine thread count so start-up probes cannot choose differently),
and sends both the same closed-loop load, 4 streams of 32 greedy tokens with a session, in alternating rounds
(old, new, new, old, ...) so a drift in the machine's speed hits both alike. Writes bench/results/ab_serving.json.
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

from bench.common import PROMPTS, ROOT, closed_loop, machine, write

STREAMS = 4
REQUESTS_PER_STREAM = 6
ROUNDS = 6  # per arm
MAX_TOKENS = 32


def _body(tag: str):
    def body_for(idx: int, j: int) -> dict:
        return {
            "messages": [{"role": "user", "content": PROMPTS[(idx + j) % len(PROMPTS)]}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "session_id": f"ab-{tag}-{idx}",
        }

    return body_for


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


def run(old_ref: str, new_ref: str | None = None) -> dict:
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
            for arm in trees:
                asyncio.run(closed_loop(urls[arm], STREAMS, 2, _body(f"warm-{arm}")))
            rounds: dict[str, list[dict]] = {"old": [], "new": []}
            order = [arm for i in range(ROUNDS) for arm in (("old", "new") if i % 2 == 0 else ("new", "old"))]
            for i, arm in enumerate(order):
                result = asyncio.run(closed_loop(urls[arm], STREAMS, REQUESTS_PER_STREAM, _body(f"{arm}-{i}")))
                rounds[arm].append(result)
                print(
                    f"  round {i:2d} {arm}: {result['tokens_per_s']:.1f} tok/s, p50 {result['latency_s']['p50']:.3f} s"
                )
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
        "streams": STREAMS,
        "max_tokens": MAX_TOKENS,
        "rounds_per_arm": ROUNDS,
        **summary,
        "throughput_change_pct": round(100 * (new["tokens_per_s"] / old["tokens_per_s"] - 1), 2),
        "p50_change_pct": round(100 * (new["p50_s"] / old["p50_s"] - 1), 2),
        "machine": machine(),
    }
    write("ab_serving", result)
    return result


if __name__ == "__main__":
    out = run(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, dict)}, indent=2))
