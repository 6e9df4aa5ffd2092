"""Replicas section: /v1/score throughput of 1 vs 3 replicas behind nginx (one shared Redis), and how long a
control-plane change (a persona PUT on one replica) takes to be applied by every replica, p50/p99.

On this 2-core machine three replicas share the same two cores, so scoring is CPU-bound and 3 replicas cannot be
~3x one; the section reports what they do (the point of replicas here is availability and shared state; the
throughput gain needs cores)."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import percentile, write
from bench.peers import Tonewatch
from bench.scoring import score_throughput

TOKEN = "bench-replica-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REDIS_URL = "redis://127.0.0.1:6379/9"  # a database of its own on the machine's Redis, flushed first
CHANGES = 20
EXEMPLARS = [
    "Hi there! Happy to help with that.",
    "Thanks so much for waiting, you're a star!",
    "No worries at all, we'll sort it out together!",
    "Great question, let me check that for you!",
    "Lovely to hear from you, how can I help today?",
]


def start(n: int, workdir: Path) -> tuple[list[Tonewatch], object]:
    from tests.conftest import Nginx

    replicas = []
    try:
        for i in range(n):
            replicas.append(
                Tonewatch(
                    port=8781 + i,
                    TONEWATCH_REDIS_URL=REDIS_URL,
                    TONEWATCH_DB_PATH=str(workdir / f"r{i}.db"),
                    TONEWATCH_ADMIN_TOKEN=TOKEN,
                    TONEWATCH_REPLICA_NAME=f"r{i}",
                )
            )
        return replicas, Nginx([r.port for r in replicas], workdir / f"nginx-{n}")
    except BaseException:
        for r in replicas:
            r.close()
        raise


def convergence(replicas: list[Tonewatch]) -> list[float]:
    """PUT a persona through replica 0; time until every replica reports the new control version applied."""
    took = []
    with httpx.Client(timeout=60) as http:
        for i in range(CHANGES):
            t0 = time.perf_counter()
            r = http.put(
                replicas[0].url + f"/admin/personas/bench-voice-{i}", json={"exemplars": EXEMPLARS}, headers=AUTH
            )
            assert r.status_code == 200, r.text
            target = http.get(replicas[0].url + "/readyz").json()["control"]["version"]
            while True:
                versions = [http.get(x.url + "/readyz").json()["control"]["version"] for x in replicas]
                if all(v >= target for v in versions):
                    break
                if time.perf_counter() - t0 > 30:
                    raise TimeoutError(f"replicas did not converge: {versions} < {target}")
                time.sleep(0.005)
            took.append(time.perf_counter() - t0)
    return took


def run() -> dict:
    import redis

    result: dict = {"redis": REDIS_URL}
    with tempfile.TemporaryDirectory(prefix="tonewatch-bench-replicas-") as tmp:
        for n in (1, 3):
            redis.Redis.from_url(REDIS_URL).flushdb()
            replicas, nginx = start(n, Path(tmp))
            try:
                asyncio.run(score_throughput(nginx.base_url, batches=6, in_flight=2))  # warm-up
                runs = [asyncio.run(score_throughput(nginx.base_url, batches=36, in_flight=6)) for _ in range(2)]
                result[f"replicas_{n}"] = {
                    "texts_per_s": statistics.median(r["texts_per_s"] for r in runs),
                    "batch_latency_p50_s": statistics.median(r["batch_latency_s"]["p50"] for r in runs),
                }
                if n == 3:
                    took = convergence(replicas)
                    result["control_convergence_s"] = {
                        "n": len(took),
                        "p50": statistics.median(took),
                        "p99": percentile(took, 0.99),
                        "max": max(took),
                    }
                print(f"  {n} replica(s): {result[f'replicas_{n}']['texts_per_s']:.0f} texts/s")
            finally:
                nginx.stop()
                for r in replicas:
                    r.close()
    result["scoring_ratio_3_vs_1"] = result["replicas_3"]["texts_per_s"] / result["replicas_1"]["texts_per_s"]
    print(f"  control convergence p50 {result['control_convergence_s']['p50'] * 1000:.0f} ms")
    write("replicas", result)
    return result


if __name__ == "__main__":
    run()
