"""How many torch threads the engine's small decode steps get, decided on the machine it runs on.

Why measured, not fixed: on the 2-core AMD EPYC of round 2's first runs a second thread made a 4-row decode step
slower inside the server (52 vs 44 tokens/s at 4 streams: it spins on the core the event loop and scorer need),
while on a 2-core Xeon with AVX-512 the same step runs 1.5x faster on two threads than on one (49 vs 81 ms at one
row). So the worker times a few tiny decode steps on one thread and on every core at start-up (under a second on
the bundled model) and widens small steps only where every core wins clearly. The lean decode forward is timed
against the model's own forward the same way (`lean_decode_wins`)."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from app.engine import kv

log = logging.getLogger("tonewatch.engine")
PROBE_ROWS = (1, 4)  # the small decode steps whose thread count is in question
WIN = 1.15  # every core must be this much faster than one thread: the server's other threads need a core too
STEPS = 3
# a variant this much slower than the first on one round has clearly lost: stop timing it. Why: on a busy machine
# a two-thread step whose second thread is descheduled can take seconds (seen: 5.9 s against 0.19 s on one thread
# while tests ran beside the server), and three more rounds of that would delay start-up by half a minute
CLEAR_LOSS = 2.0


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


def lean_decode_wins(model: Any, *, pad_id: int, threads: int) -> bool:
    """Whether the lean decode forward (app/engine/fastpath.py) is at least as fast as the model's own forward on
    this CPU, timed interleaved at PROBE_ROWS on `threads` threads (the outputs are bitwise equal, so only speed
    decides). Any failure of the lean forward here means it is not used."""
    from app.engine import fastpath

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        lean = own = 0.0
        for rows in PROBE_ROWS:
            variants = {
                "lean": lambda m, ids, mask, pos, cache: fastpath.decode_step(m, ids, mask, pos, cache),
                "own": lambda m, ids, mask, pos, cache: m(
                    input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1
                ),
            }
            timings = _time_variants(model, rows, pad_id, variants)
            log.info(
                "decode step, %d row(s): lean forward %.1f ms, model forward %.1f",
                rows,
                *(timings[k] * 1e3 for k in ("lean", "own")),
            )
            lean, own = lean + timings["lean"], own + timings["own"]
        return lean <= own
    except Exception as exc:
        log.warning("lean decode forward failed its start-up probe (%r); decode steps use the model's forward", exc)
        return False
    finally:
        torch.set_num_threads(before)


def _time_steps(model: Any, rows: int, cores: int, pad_id: int) -> tuple[float, float]:
    def on(threads: int) -> Callable[..., Any]:
        def step(m: Any, ids: Any, mask: Any, pos: Any, cache: Any) -> Any:
            torch.set_num_threads(threads)
            return m(
                input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1
            )

        return step

    torch.set_num_threads(cores)
    timings = _time_variants(model, rows, pad_id, {"one": on(1), "every": on(cores)}, clear_loss=CLEAR_LOSS)
    return timings["one"], timings["every"]


def _time_variants(
    model: Any, rows: int, pad_id: int, variants: dict[str, Callable[..., Any]], clear_loss: float | None = None
) -> dict[str, float]:
    """Median seconds of one decode step per variant, after a 16-token prefill; variants interleaved so a burst of
    other load hits them all, the cache rewound after each step. With `clear_loss`, timing stops after a round in
    which some variant took that many times the first variant's time (the medians then include that round)."""
    device = next(model.parameters()).device
    ids = torch.full((rows, 16), pad_id, dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    cache = kv.GrowingCache(rows)
    model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1)
    length = mask.shape[1]
    step_ids = ids[:, -1:]
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(STEPS + 1):  # the first round warms up
        for name, step in variants.items():
            grown = torch.ones((rows, length + 1), dtype=torch.long, device=device)
            position_ids = torch.full((rows, 1), length, device=device)
            start = time.perf_counter()
            step(model, step_ids, grown, position_ids, cache)
            timings[name].append(time.perf_counter() - start)
            kv.restore_length(cache, length)
        first = next(iter(timings.values()))[-1]
        if clear_loss is not None and any(values[-1] > clear_loss * first for values in timings.values()):
            return {name: statistics.median(values[-1:]) for name, values in timings.items()}
    return {name: statistics.median(values[1:]) for name, values in timings.items()}
