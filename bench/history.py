"""History benchmark: turn write latency (Redis, SQLite) and history+drift overhead per request."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import RESULTS, summary, write

REDIS_URL = "redis://127.0.0.1:6379/14"


async def measure(kind: str, tmp: Path, n: int = 400) -> dict:
    from app.config import Settings
    from app.metrics import Metrics
    from app.scoring.personas import load_shipped
    from app.services.history import HistoryService, TurnInput
    from app.services.session_drift import SessionDrift
    from app.store.base import Turn
    from app.store.factory import open_store
    from app.store.guard import GuardedStore
    from app.store.spill import ResilientHistory

    prefix = f"twbench:{uuid.uuid4().hex[:8]}:"
    metrics = Metrics()
    store = GuardedStore(
        open_store(REDIS_URL if kind == "redis" else None, tmp / f"{kind}.db", prefix=prefix), metrics=metrics
    )
    sessions = SessionDrift(store, personas=lambda name: None)
    spill = ResilientHistory(
        store,
        tmp / f"{kind}.spill",
        metrics=metrics,
        apply_state=sessions.apply_pending,
        store_reachable=store.reachable,
    )
    await spill.start()
    service = HistoryService(store, spill, sessions, metrics)
    persona = load_shipped(Settings().persona_dir)[0]
    persona.loo_distances, persona.exemplar_dims = (
        [0.3, 0.35, 0.4, 0.32, 0.28],
        [{"formality": 0.5, "politeness": 0.75, "warmth": 0.7}] * 5,
    )
    tone = {
        "label": "friendly",
        "probs": {},
        "formality": 0.5,
        "politeness": 0.7,
        "warmth": 0.7,
        "persona": persona.name,
        "persona_distance": 0.35,
        "persona_match": True,
    }
    writes, observes = [], []
    for i in range(n):
        turn = Turn(
            session_id=f"s{i % 20}",
            request_id=uuid.uuid4().hex,
            ts=time.time(),
            adapter="base",
            persona=persona.name,
            prompt="hello",
            response="Thanks so much!",
            tone=tone,
        )
        t0 = time.perf_counter()
        await store.append(turn)
        writes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await service.observe(
            TurnInput(
                session_id=f"o{i % 20}",
                source="base",
                label="base",
                persona=persona,
                prompt="hi",
                response="Thanks so much!",
                tone=tone,
                latency={"total_s": 1.0, "tokens": 10},
            )
        )
        observes.append(time.perf_counter() - t0)
    for i in range(20):
        await store.delete_session(f"s{i}")
        await store.delete_session(f"o{i}")
    await spill.stop()
    await store.close()
    return {
        "write_s": summary(writes),
        "history_and_drift_per_request_s": summary(observes),
        "write_p99_s": sorted(writes)[int(0.99 * n)],
    }


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = {kind: asyncio.run(measure(kind, Path(tmp))) for kind in ("redis", "sqlite")}
    write("history", result)
    for kind, r in result.items():
        print(
            f"  {kind}: write p50 {r['write_s']['p50'] * 1000:.2f} ms p99 {r['write_p99_s'] * 1000:.2f} ms; "
            f"history+drift median {r['history_and_drift_per_request_s']['p50'] * 1000:.2f} ms"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    kinds = list(result)
    ax.bar([f"{k} write p50" for k in kinds], [result[k]["write_s"]["p50"] * 1000 for k in kinds])
    ax.bar([f"{k} write p99" for k in kinds], [result[k]["write_p99_s"] * 1000 for k in kinds])
    ax.bar(
        [f"{k} turn total" for k in kinds], [result[k]["history_and_drift_per_request_s"]["p50"] * 1000 for k in kinds]
    )
    ax.set_ylabel("ms")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(RESULTS / "history.png", dpi=100)
    return result
