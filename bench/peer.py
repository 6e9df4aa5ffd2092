"""Peer section: the embedded engine vs `transformers serve --continuous-batching` on the same converted model and
the same streamed greedy load (48 tokens), servers started alternately, at concurrency 1, 4 and 16; the opt-in
int8 path beside them. Quoted: medians over the rounds and their ratios to the peer."""

from __future__ import annotations

import asyncio
import os
import statistics

from bench.common import PROMPTS, write
from bench.peers import Tonewatch, TransformersServe, streamed_load

MAX_TOKENS = 48
CHOSEN = os.environ.get("BENCH_PEER_LEVELS", "1,4,16").split(",")  # a subset, for quick experiments
LEVELS = [(c, n) for c, n in [(1, 4), (4, 3), (16, 2)] if str(c) in CHOSEN]  # (concurrency, requests per client)
ROUNDS = int(os.environ.get("BENCH_PEER_ROUNDS", "2"))


def body(idx: int, j: int) -> dict:
    return {
        "messages": [{"role": "user", "content": PROMPTS[(idx + j) % len(PROMPTS)]}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "session_id": f"bench-{idx}",  # Tonewatch scores and stores every turn (peers get the body without it)
    }


def peer_body(idx: int, j: int) -> dict:
    plain = body(idx, j)
    del plain["session_id"]
    return plain


SERVERS = {
    "transformers_serve": lambda: TransformersServe(),
    "tonewatch": lambda: Tonewatch(),
    "tonewatch_fp16": lambda: Tonewatch(TONEWATCH_QUANTIZE="fp16"),
    "tonewatch_int8": lambda: Tonewatch(TONEWATCH_QUANTIZE="int8"),
    "tonewatch_engine_1thread": lambda: Tonewatch(TONEWATCH_ENGINE_THREADS="1"),
    "tonewatch_engine_2threads": lambda: Tonewatch(TONEWATCH_ENGINE_THREADS="2"),
    "tonewatch_passive": lambda: Tonewatch(OMP_WAIT_POLICY="PASSIVE"),
    "tonewatch_no_prefix_reuse": lambda: Tonewatch(TONEWATCH_PREFIX_CACHE_MB="0"),
    "tonewatch_plain_head": lambda: Tonewatch(TONEWATCH_REORDER_HEAD="false"),
}
DEFAULT = ["transformers_serve", "tonewatch", "tonewatch_plain_head", "tonewatch_fp16", "tonewatch_int8"]
if os.environ.get("BENCH_BEFORE_ROOT"):  # an earlier checkout, for the profile note's before/after table
    SERVERS["tonewatch_before"] = lambda: Tonewatch(root=os.environ["BENCH_BEFORE_ROOT"])


def measure(name: str) -> dict:
    server = SERVERS[name]()
    load = body if isinstance(server, Tonewatch) else peer_body
    try:
        asyncio.run(streamed_load(server.url, server.model, 2, 1, load))  # warm-up (first forward, allocator)
        levels = {}
        for concurrency, per_client in LEVELS:
            cpu = server.cpu_seconds()
            levels[concurrency] = asyncio.run(streamed_load(server.url, server.model, concurrency, per_client, load))
            # CPU time per token: what the server spends, less sensitive than tokens/s to other load on the machine
            levels[concurrency]["cpu_ms_per_token"] = (
                1000 * (server.cpu_seconds() - cpu) / max(1, levels[concurrency]["tokens"])
            )
            print(
                f"  {name} c={concurrency}: {levels[concurrency]['tokens_per_s']:.1f} tok/s, "
                f"ttft p50 {levels[concurrency]['ttft_s']['p50'] or float('nan'):.3f}s, "
                f"cpu {levels[concurrency]['cpu_ms_per_token']:.1f} ms/token, "
                f"failures {levels[concurrency]['failures']}"
            )
        return levels
    finally:
        server.close()


def run(servers: list[str] | None = None) -> dict:
    names = servers or DEFAULT
    rounds: list[dict] = []
    for i in range(ROUNDS):
        order = names if i % 2 == 0 else list(reversed(names))  # alternate who goes first
        rounds.append({name: measure(name) for name in order})
    medians: dict[str, dict] = {}
    for name in names:
        medians[name] = {}
        for concurrency, _ in LEVELS:
            runs = [r[name][concurrency] for r in rounds]
            medians[name][concurrency] = {
                "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                "ttft_p50_s": statistics.median(r["ttft_s"]["p50"] for r in runs),
                "cpu_ms_per_token": statistics.median(r["cpu_ms_per_token"] for r in runs),
                "failures": sum(r["failures"] for r in runs),
            }
    peer = medians.get("transformers_serve")
    ratios = {}
    if peer:
        for name in names:
            if name != "transformers_serve":
                ratios[name] = {c: medians[name][c]["tokens_per_s"] / peer[c]["tokens_per_s"] for c, _ in LEVELS}
    result = {
        "max_tokens": MAX_TOKENS,
        "rounds": ROUNDS,
        "levels": [c for c, _ in LEVELS],
        "median": medians,
        "ratio_to_transformers_serve": ratios,
        "goal": {"1": 1.0, "4": 1.2, "16": 1.2},
        "raw": rounds,
    }
    write("peer", result)
    plot(result)
    return result


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.common import RESULTS

    levels = result["levels"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(result["median"]))
    for k, (name, per_level) in enumerate(result["median"].items()):
        xs = [i + k * width for i in range(len(levels))]
        ax.bar(xs, [per_level[c]["tokens_per_s"] for c in levels], width, label=name)
    ax.set_xticks([i + width * (len(result["median"]) - 1) / 2 for i in range(len(levels))])
    ax.set_xticklabels([f"concurrency {c}" for c in levels])
    ax.set_ylabel("tokens/s (median of rounds)")
    ax.set_title(f"Streamed greedy load, {result['max_tokens']} tokens, same model, servers alternating")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "peer.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    import sys

    print(run(sys.argv[1:] or None)["ratio_to_transformers_serve"])
