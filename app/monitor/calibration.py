"""Monte-Carlo calibration of the drift detector's limits: the CUSUM threshold (alone) and the (CUSUM h, EWMA L) pair
of the combined alarm whose in-control average run length is a target number of turns.

In control the per-turn statistic (app/monitor/drift.py) is N(0, 1) clipped at S_CAP, or bootstrapped from
in-persona samples. Many streams run in parallel (vectorised over streams) and record their running maxima; the
first passage above any level is then one search, so a level for a target ARL is a bisection. Deterministic for a
seed, cached per arguments (~0.3 s the first time).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

S_CAP = 4.0  # the per-turn statistic is clipped to [-S_CAP, S_CAP]


class _FirstPassage:
    """First time each simulated stream's statistic exceeds any level ``h``, from the running-max records.

    Records are (stream, time, value) each time a stream's statistic reaches a new maximum; within a stream both
    time and value increase, so the first passage above ``h`` is one ``searchsorted`` over all streams at once.
    """

    def __init__(self, streams: np.ndarray, times: np.ndarray, values: np.ndarray, n_streams: int, horizon: int):
        order = np.argsort(streams, kind="stable")  # records were appended in time order
        self.streams, self.times, values = streams[order], times[order], values[order]
        self.width = float(values.max()) + 1.0 if values.size else 1.0
        self.keys = self.streams * self.width + values
        self.base = np.arange(n_streams) * self.width
        self.ends = np.searchsorted(self.streams, np.arange(n_streams), side="right")
        self.max_value = float(values.max()) if values.size else 0.0
        self.horizon = horizon

    def tau(self, level: float) -> np.ndarray:
        """First passage times above ``level`` (inf where the stream never passed it within the horizon)."""
        out = np.full(self.base.size, np.inf)
        if level >= self.max_value:
            return out
        idx = np.searchsorted(self.keys, self.base + level, side="right")
        ok = idx < self.ends
        out[ok] = self.times[idx[ok]]
        return out


def _arl(tau: np.ndarray, horizon: int) -> float:
    """Average run length: the geometric MLE with censoring at ``horizon`` (the sample mean when none censored)."""
    alarms = int(np.count_nonzero(tau <= horizon))
    return float(np.minimum(tau, horizon).sum()) / alarms if alarms else math.inf


def _simulate(
    k_ref: float, ewma_lambda: float | None, null: tuple[float, ...] | None, seed: int, longest_arl: float
) -> tuple[_FirstPassage, _FirstPassage | None]:
    """Run many in-control streams in parallel (vectorized over streams) and record running maxima."""
    horizon = int(min(max(3.0 * longest_arl, 200.0), 20_000.0))
    n_streams = int(min(max(1.2e7 / horizon, 400.0), 3000.0))
    rng = np.random.default_rng(seed)
    pool = np.clip(np.asarray(null, dtype=float), -S_CAP, S_CAP) if null is not None else None
    cusum, ewma = np.zeros(n_streams), np.zeros(n_streams)
    best_c, best_e = np.zeros(n_streams), np.zeros(n_streams)
    rec_c: list[tuple[np.ndarray, int, np.ndarray]] = []
    rec_e: list[tuple[np.ndarray, int, np.ndarray]] = []
    t, chunk = 0, 512
    while t < horizon:
        size = min(chunk, horizon - t)
        if pool is None:
            draws = np.clip(rng.standard_normal((size, n_streams)), -S_CAP, S_CAP)
        else:
            draws = pool[rng.integers(0, pool.size, size=(size, n_streams))]
        draws_minus_k = draws - k_ref
        for i in range(size):
            t += 1
            cusum += draws_minus_k[i]
            np.maximum(cusum, 0.0, out=cusum)
            idx = np.flatnonzero(cusum > best_c)
            if idx.size:
                vals = cusum[idx]
                best_c[idx] = vals
                rec_c.append((idx, t, vals))
            if ewma_lambda is not None:
                ewma *= 1.0 - ewma_lambda
                ewma += ewma_lambda * draws[i]
                idx = np.flatnonzero(ewma > best_e)
                if idx.size:
                    vals = ewma[idx]
                    best_e[idx] = vals
                    rec_e.append((idx, t, vals))

    def build(records):
        if not records:
            empty = np.zeros(0)
            return _FirstPassage(empty.astype(np.int64), empty, empty, n_streams, horizon)
        streams = np.concatenate([r[0] for r in records])
        times = np.concatenate([np.full(r[0].size, r[1], dtype=float) for r in records])
        values = np.concatenate([r[2] for r in records])
        return _FirstPassage(streams, times, values, n_streams, horizon)

    return build(rec_c), (build(rec_e) if ewma_lambda is not None else None)


def _level_for(fp: _FirstPassage, target: float) -> float:
    """Smallest level whose simulated ARL reaches ``target`` (ARL is non-decreasing in the level)."""
    lo, hi = 0.0, fp.max_value
    if _arl(fp.tau(lo), fp.horizon) >= target:
        return lo
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _arl(fp.tau(mid), fp.horizon) >= target:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-4:
            break
    return hi


def _null_key(null_samples: list[float] | None) -> tuple[float, ...] | None:
    if null_samples is None:
        return None
    values = tuple(float(x) for x in null_samples if math.isfinite(float(x)))
    if len(values) < 10:
        raise ValueError("null_samples needs at least 10 finite values")
    return values


def calibrate_threshold(k_ref: float, arl0: float, null_samples: list[float] | None = None, seed: int = 0) -> float:
    """CUSUM threshold ``h`` (alone) whose in-control average run length is ``arl0`` turns.

    In control ``s_t`` is N(0, 1) clipped at ``S_CAP``, or bootstrapped from ``null_samples`` (standardized
    statistics of in-persona turns, see ``standardized_statistic``). Monte Carlo, deterministic for a seed, cached.
    """
    return _calibrate_threshold(float(k_ref), float(arl0), _null_key(null_samples), int(seed))


@lru_cache(maxsize=64)
def _calibrate_threshold(k_ref: float, arl0: float, null: tuple[float, ...] | None, seed: int) -> float:
    fp, _ = _simulate(k_ref, None, null, seed, arl0)
    return _level_for(fp, arl0)


def calibrate_limits(
    k_ref: float, ewma_lambda: float, arl0: float, null_samples: list[float] | None = None, seed: int = 0
) -> tuple[float, float]:
    """(h, L) for the combined alarm "CUSUM > h or EWMA > L" with in-control ARL ``arl0``.

    Both detectors get the same individual ARL, chosen so that their union has ARL ``arl0``.
    """
    return _calibrate_limits(float(k_ref), float(ewma_lambda), float(arl0), _null_key(null_samples), int(seed))


@lru_cache(maxsize=64)
def _calibrate_limits(
    k_ref: float, ewma_lambda: float, arl0: float, null: tuple[float, ...] | None, seed: int
) -> tuple[float, float]:
    lo, hi = arl0, 3.0 * arl0  # the union's ARL is below each part's and (rates add at most) above half of it
    fp_c, fp_e = _simulate(k_ref, ewma_lambda, null, seed, hi)
    assert fp_e is not None
    horizon = fp_c.horizon

    def limits(arl_each: float) -> tuple[float, float, float]:
        h, lim = _level_for(fp_c, arl_each), _level_for(fp_e, arl_each)
        return h, lim, _arl(np.minimum(fp_c.tau(h), fp_e.tau(lim)), horizon)

    best = limits(hi)
    if best[2] < arl0:
        return best[0], best[1]
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        candidate = limits(mid)
        if candidate[2] >= arl0:
            hi, best = mid, candidate
        else:
            lo = mid
        if hi - lo < 1e-3 * arl0:
            break
    return best[0], best[1]
