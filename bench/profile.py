"""Where the embedded engine's time goes under the peer bench's load: py-spy samples the server (all threads,
idle included) while streamed clients run, and every sample is put in one bucket: the engine thread's prefill and
decode forwards, sampling, KV-cache surgery, detokenising, the hand-off to the event loop, metrics; the scorer
thread; the event loop (HTTP, SSE, JSON, history); idle. Quoted per generated token, so before/after runs of
different speeds compare directly (docs/engine-profile.md has the table).

Run: python -m bench.profile [concurrency ...]; BENCH_BEFORE_ROOT=<checkout> adds the same for an earlier commit.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.common import RESULTS, write
from bench.peer import body
from bench.peers import Tonewatch, streamed_load

RATE = 97  # samples/s (prime, so sampling does not lock onto a periodic step)

ENGINE_BUCKETS = [  # first match wins, searched in the stack from the leaf up
    ("hand-off", ("call_soon_threadsafe", "Outbox.flush", "flush (app/engine/worker.py", "emit (app/engine/worker.py")),
    ("detokenise", ("app/engine/text.py",)),
    ("metrics", ("prometheus_client",)),
    ("sampling", ("app/engine/sampling.py",)),
    ("kv surgery", ("merge (app/engine/kv.py", "select_rows (app/engine/kv.py", "trim_padding (app/engine/kv.py")),
]


def bucket(stack: str) -> str:
    frames = stack.split(";")
    text = ";".join(frames)
    if "app/engine/worker.py" in text and "_loop" in text:
        if frames[-1].startswith(("wait (threading.py", "_take_pending")) or "wait (threading.py" in frames[-1]:
            return "engine: idle"
        for name, needles in ENGINE_BUCKETS:
            if any(n in text for n in needles) and not ("_forward (app/engine/worker.py" in text and name == "metrics"):
                if name in ("sampling", "kv surgery") and "_forward (app/engine/worker.py" in text:
                    continue
                return f"engine: {name}"
        if "_forward (app/engine/worker.py" in text:
            return "engine: prefill forward" if "_prefill (app/engine/worker.py" in text else "engine: decode forward"
        return "engine: other python"
    if "tonewatch-scorer" in text or "app/scoring/" in text:
        return "scorer" if "app/scoring/" in text else "scorer: idle"
    if "base_events.py" in text or "uvicorn" in text or "asyncio" in text:
        if "select (" in frames[-1]:
            return "event loop: idle"
        return "event loop"
    return "other threads"


def parse(raw: Path) -> Counter:
    counts: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack:
            counts[bucket(stack)] += int(n)
    return counts


def profile(name: str, concurrency: int, per_client: int, root: str | None = None) -> dict:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    server = Tonewatch(root=root)
    raw = RESULTS / "tmp" / f"profile-{name}-c{concurrency}.txt"
    try:
        asyncio.run(streamed_load(server.url, server.model, 2, 1, body))  # warm-up
        argv = [pyspy, "record", "-r", str(RATE), "-i", "-t", "--nonblocking", "-f", "raw", "-o", str(raw)]
        spy = subprocess.Popen(
            [*argv, "--pid", str(server.proc.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        load = asyncio.run(streamed_load(server.url, server.model, concurrency, per_client, body))
        spy.send_signal(2)  # SIGINT: py-spy writes the file and exits
        spy.wait(timeout=60)
    finally:
        server.close()
    counts = parse(raw)
    seconds = {k: v / RATE for k, v in counts.items()}
    tokens = max(1, load["tokens"])
    engine_busy = sum(v for k, v in seconds.items() if k.startswith("engine:") and k != "engine: idle")
    return {
        "concurrency": concurrency,
        "tokens": load["tokens"],
        "tokens_per_s": load["tokens_per_s"],
        "wall_s": load["wall_s"],
        "ms_per_token": {k: 1000 * v / tokens for k, v in sorted(seconds.items())},
        "engine_share": {
            k.removeprefix("engine: "): v / engine_busy
            for k, v in sorted(seconds.items())
            if k.startswith("engine:") and k != "engine: idle" and engine_busy
        },
    }


def run(levels: list[int] | None = None) -> dict:
    levels = levels or [4, 16]
    per_client = {1: 4, 4: 3, 16: 2}
    runs: dict[str, dict] = {}
    targets = [("after", None)]
    if os.environ.get("BENCH_BEFORE_ROOT"):
        targets.insert(0, ("before", os.environ["BENCH_BEFORE_ROOT"]))
    for name, root in targets:
        runs[name] = {str(c): profile(name, c, per_client.get(c, 2), root) for c in levels}
        for c, r in runs[name].items():
            print(f"  {name} c={c}: {r['tokens_per_s']:.1f} tok/s; engine shares {r['engine_share']}")
    result = {"rate_hz": RATE, "runs": runs}
    write("profile", result)
    plot(result)
    return result


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    columns = [(name, c) for name in runs for c in runs[name]]
    buckets = sorted({b for name, c in columns for b in runs[name][c]["ms_per_token"] if "idle" not in b})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bottoms = [0.0] * len(columns)
    for b in buckets:
        values = [runs[name][c]["ms_per_token"].get(b, 0.0) for name, c in columns]
        ax.bar(range(len(columns)), values, bottom=bottoms, label=b)
        bottoms = [x + y for x, y in zip(bottoms, values, strict=True)]
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([f"{name}\nc={c}" for name, c in columns])
    ax.set_ylabel("busy ms per generated token (all threads)")
    ax.set_title("Where the server's CPU goes (py-spy, streamed greedy load)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    fig.savefig(RESULTS / "profile.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    run([int(a) for a in sys.argv[1:]] or None)
