"""Gateway section: the same streamed load straight at an upstream and through Tonewatch in gateway mode
(TONEWATCH_UPSTREAM_URL), alternating direct/through at every level, at concurrency 1, 8 and 16. Upstreams:
llama.cpp's server on the Q4_1 GGUF (when `make bench-deps` built it) and `transformers serve`. Quoted: median
throughput ratio (through / direct) and the median time to first token that the gateway adds."""

from __future__ import annotations

import asyncio
import os
import statistics

from bench.common import PROMPTS, RESULTS, write
from bench.peers import LlamaCpp, Tonewatch, TransformersServe, streamed_load

MAX_TOKENS = 48
LEVELS = [(1, 4), (8, 2), (16, 2)]
ROUNDS = int(os.environ.get("BENCH_GATEWAY_ROUNDS", "2"))


def make_body(session: bool):
    def body(idx: int, j: int) -> dict:
        b = {
            "messages": [{"role": "user", "content": PROMPTS[(idx + j) % len(PROMPTS)]}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if session:
            b["session_id"] = f"gw-{idx}"  # through Tonewatch every turn is scored and stored
        return b

    return body


def measure(upstream_name: str, upstream) -> dict:
    gateway = Tonewatch(port=8770, TONEWATCH_UPSTREAM_URL=upstream.url + "/v1", TONEWATCH_UPSTREAM_NAME=upstream_name)
    try:
        direct_body, through_body = make_body(False), make_body(True)
        asyncio.run(streamed_load(upstream.url, upstream.model, 2, 1, direct_body))  # warm-up both paths
        asyncio.run(streamed_load(gateway.url, upstream.model, 2, 1, through_body))
        levels: dict[int, dict] = {}
        for concurrency, per_client in LEVELS:
            runs = {"direct": [], "through": []}
            for i in range(ROUNDS):
                order = ["direct", "through"] if i % 2 == 0 else ["through", "direct"]
                for path in order:
                    url, body = (upstream.url, direct_body) if path == "direct" else (gateway.url, through_body)
                    runs[path].append(asyncio.run(streamed_load(url, upstream.model, concurrency, per_client, body)))
            med = {
                p: {
                    "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
                    "ttft_p50_s": statistics.median(r["ttft_s"]["p50"] for r in rs),
                    "failures": sum(r["failures"] for r in rs),
                }
                for p, rs in runs.items()
            }
            levels[concurrency] = {
                **med,
                "throughput_ratio": med["through"]["tokens_per_s"] / med["direct"]["tokens_per_s"],
                "ttft_added_ms": 1000 * (med["through"]["ttft_p50_s"] - med["direct"]["ttft_p50_s"]),
                "raw": runs,
            }
            print(
                f"  {upstream_name} c={concurrency}: direct {med['direct']['tokens_per_s']:.1f} tok/s, "
                f"through {med['through']['tokens_per_s']:.1f} tok/s "
                f"(x{levels[concurrency]['throughput_ratio']:.2f}), TTFT +{levels[concurrency]['ttft_added_ms']:.1f} ms"
            )
        return levels
    finally:
        gateway.close()


def run() -> dict:
    upstreams = {}
    if LlamaCpp.available():
        upstreams["llama_cpp"] = LlamaCpp
    else:
        print("  llama.cpp server not built (`make bench-deps`); measuring transformers serve only")
    upstreams["transformers_serve"] = TransformersServe
    result: dict = {"max_tokens": MAX_TOKENS, "rounds": ROUNDS, "goal": {"throughput_ratio": 0.9, "ttft_added_ms": 20}}
    for name, cls in upstreams.items():
        upstream = cls()
        try:
            result[name] = measure(name, upstream)
        finally:
            upstream.close()
    write("gateway", result)
    plot(result, list(upstreams))
    return result


def plot(result: dict, names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        levels = sorted(result[name], key=int)
        xs = range(len(levels))
        ax.bar([x - 0.2 for x in xs], [result[name][c]["direct"]["tokens_per_s"] for c in levels], 0.4, label="direct")
        ax.bar(
            [x + 0.2 for x in xs],
            [result[name][c]["through"]["tokens_per_s"] for c in levels],
            0.4,
            label="through Tonewatch",
        )
        for x, c in zip(xs, levels, strict=True):
            r = result[name][c]
            ax.annotate(
                f"x{r['throughput_ratio']:.2f}\nTTFT +{r['ttft_added_ms']:.0f} ms",
                (x, 0),
                ha="center",
                xytext=(0, 4),
                textcoords="offset points",
                fontsize=8,
            )
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"c={c}" for c in levels])
        ax.set_title(f"{name}: streamed, {result['max_tokens']} tokens")
        ax.set_ylabel("tokens/s (median)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "gateway.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    run()
