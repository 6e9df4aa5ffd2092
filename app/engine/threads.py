"""How many torch threads the engine's small decode steps get, decided on the machine it runs on.

Why measured, not fixed: on the 2-core AMD EPYC of round 2's first runs a second thread made a 4-row decode step
slower inside the server (52 vs 44 tokens/s at 4 streams: it spins on the core the event loop and scorer need),
while on a 2-core Xeon with AVX-512 the same step runs 1.5x faster on two threads than on one (49 vs 81 ms at one
row). So the worker times a few tiny decode steps on one thread and on every core at start-up (under a second on
the bundled model) and widens small steps only where every core wins clearly."""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import torch

from app.engine import kv

log = logging.getLogger("tonewatch.engine")
PROBE_ROWS = (1, 4)  # the small decode steps whose thread count is in question
WIN = 1.15  # every core must be this much faster than one thread: the server's other threads need a core too
STEPS = 3


def wide_from(model: Any, *, device: str, cores: int, pad_id: int, default: int) -> int:
    """The smallest decode batch that should use every core: one of PROBE_ROWS if all cores beat one thread by
    WIN there, else `default`. Leaves torch's thread count as it found it; any failure keeps `default`."""
    if cores <= 1 or not device.startswith("cpu"):
        return default
    before = torch.get_num_threads()
    try:
        for rows in PROBE_ROWS:
            one, every = _time_steps(model, rows, cores, pad_id)
            log.info("decode step, %d row(s): %.1f ms on 1 thread, %.1f on %d", rows, one * 1e3, every * 1e3, cores)
            if one >= WIN * every:
                return rows
        return default
    except Exception as exc:  # a model this probe cannot drive: keep the fixed rule
        log.warning("thread probe failed (%r); small decode steps keep one thread", exc)
        return default
    finally:
        torch.set_num_threads(before)


def _time_steps(model: Any, rows: int, cores: int, pad_id: int) -> tuple[float, float]:
    device = next(model.parameters()).device
    ids = torch.full((rows, 16), pad_id, dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    cache = kv.GrowingCache(rows)
    torch.set_num_threads(cores)
    model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1)
    length = mask.shape[1]
    step_ids = ids[:, -1:]
    timings: dict[int, list[float]] = {1: [], cores: []}
    for _ in range(STEPS + 1):  # the first pair warms up
        for threads in (1, cores):  # interleaved, so a burst of other load hits both
            torch.set_num_threads(threads)
            grown = torch.ones((rows, length + 1), dtype=torch.long, device=device)
            start = time.perf_counter()
            model(
                input_ids=step_ids,
                attention_mask=grown,
                position_ids=torch.full((rows, 1), length, device=device),
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            timings[threads].append(time.perf_counter() - start)
            kv.restore_length(cache, length)
    return statistics.median(timings[1][1:]), statistics.median(timings[cores][1:])
