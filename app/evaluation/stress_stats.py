"""Intervals and paired tests for stress-suite results, over seeds and over the suite's units (pure numpy).

A *unit* is what the suite samples: a customer message for single-turn metrics, a session for session metrics. Each
metric is a ratio over units, sum(numerator) / sum(denominator) (a rate over messages has denominator 1 per
message; a session's intended-label rate pools its turns, as the summary does). For a method trained with several
seeds, each unit's numerator is the mean over seeds (the suite is the same for every seed, so denominators agree).

* ``interval``: the point value and a percentile bootstrap 95% interval over units (resampling messages or
  sessions), plus the value per seed and their spread. The bootstrap covers the suite's sampling, the per-seed
  values the training noise; a reader needs both.
* ``paired``: method minus reference on the same units: paired bootstrap interval of the difference, a sign-flip
  permutation p-value (two-sided) and whether every seed pair agrees in sign. Holm's step-down adjusts the p-values
  of one metric across the comparisons made (``holm``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.evaluation import stress_metrics as sm

Row = dict[str, Any]
Rows = dict[str, Any]  # {"single": [Row], "sessions": [[Row]]}: one run of one adapter
BOOTSTRAP = 2000
PERMUTATIONS = 5000


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str  # "message" | "session"
    higher_is_better: bool
    # (rows of one unit, intended label, window) -> (numerator, denominator); None when the unit has no value
    value: Callable[[list[Row], str, int], tuple[float, float] | None]


def _single(fn: Callable[[Row, str], float | None]) -> Callable[[list[Row], str, int], tuple[float, float] | None]:
    def value(rows: list[Row], intended: str, window: int) -> tuple[float, float] | None:
        v = fn(rows[0], intended)
        return None if v is None else (float(v), 1.0)

    return value


def _pooled(fn: Callable[[Row, str], float]) -> Callable[[list[Row], str, int], tuple[float, float] | None]:
    def value(rows: list[Row], intended: str, window: int) -> tuple[float, float] | None:
        return (float(sum(fn(r, intended) for r in rows)), float(len(rows))) if rows else None

    return value


def _worst(rows: list[Row], intended: str, window: int) -> tuple[float, float] | None:
    w = sm.worst_window([r["distance"] for r in rows], window)
    return None if w is None else (float(w["mean"]), 1.0)


def _dim_std(rows: list[Row], intended: str, window: int) -> tuple[float, float] | None:
    if len(rows) < 2:
        return None
    return float(np.mean([np.std([r[d] for r in rows]) for d in ("formality", "politeness", "warmth")])), 1.0


METRICS: tuple[Metric, ...] = (
    Metric("single.intended_label_rate", "message", True, _single(lambda r, i: float(r["label"] == i))),
    Metric("single.persona_match_rate", "message", True, _single(lambda r, i: float(bool(r["match"])))),
    Metric("single.persona_distance_mean", "message", False, _single(lambda r, i: r["distance"])),
    Metric("sessions.intended_label_rate", "session", True, _pooled(lambda r, i: float(r["label"] == i))),
    Metric("sessions.persona_match_rate", "session", True, _pooled(lambda r, i: float(bool(r["match"])))),
    Metric("sessions.alerted_turns_per_100", "session", False, _pooled(lambda r, i: 100.0 * bool(r["alert"]))),
    Metric("sessions.worst_window_mean", "session", False, _worst),
    Metric("sessions.dimension_std_mean", "session", False, _dim_std),
)
BY_NAME = {m.name: m for m in METRICS}


def unit_values(runs: Sequence[Rows], metric: Metric, intended: str, window: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(numerators [seeds, units], denominators [units]) for one method's runs (one per seed). Units without a value
    in some seed are dropped for all seeds, so every seed is judged on the same units."""
    per_seed: list[list[tuple[float, float] | None]] = []
    for run in runs:
        units = [[r] for r in run["single"]] if metric.unit == "message" else list(run["sessions"])
        per_seed.append([metric.value(u, intended, window) for u in units])
    n = {len(s) for s in per_seed}
    if len(n) != 1:
        raise ValueError(f"{metric.name}: seeds were run on different suites ({sorted(n)} units)")
    width = n.pop()
    keep = [j for j in range(width) if all(s[j] is not None for s in per_seed)]
    kept = set(keep)
    pairs = [[v for j, v in enumerate(s) if j in kept] for s in per_seed]
    num = np.asarray([[v[0] for v in s if v is not None] for s in pairs], dtype=np.float64)
    den = np.asarray([v[1] for v in pairs[0] if v is not None], dtype=np.float64)
    return num.reshape(len(per_seed), len(keep)), den


def _ratio(num: np.ndarray, den: np.ndarray) -> float:
    return float(num.sum(axis=-1) / den.sum()) if den.sum() else float("nan")


def _boot_ratios(num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return num[idx].sum(axis=1) / den[idx].sum(axis=1)


def _draws(units: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, units, size=(n, units))


def value(runs: Sequence[Rows], metric: Metric, intended: str, *, window: int = 4) -> float | None:
    """The metric's value (mean over the seeds' runs), without an interval."""
    num, den = unit_values(runs, metric, intended, window)
    return _ratio(num.mean(axis=0), den) if den.size else None


def interval(
    runs: Sequence[Rows], metric: Metric, intended: str, *, window: int = 4, n: int = BOOTSTRAP, seed: int = 0
) -> dict[str, Any]:
    """Point value (seed mean), bootstrap 95% interval over units, per-seed values and their spread."""
    num, den = unit_values(runs, metric, intended, window)
    if den.size == 0:
        return {"value": None, "ci95": None, "per_seed": [], "seed_sd": None, "units": 0}
    mean = num.mean(axis=0)
    boots = _boot_ratios(mean, den, _draws(den.size, n, seed))
    per_seed = [_ratio(num[s], den) for s in range(num.shape[0])]
    return {
        "value": _ratio(mean, den),
        "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
        "per_seed": per_seed,
        "seed_sd": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None,
        "units": int(den.size),
    }


def paired(
    method: Sequence[Rows],
    reference: Sequence[Rows],
    metric: Metric,
    intended: str,
    *,
    window: int = 4,
    n: int = BOOTSTRAP,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> dict[str, Any]:
    """Method minus reference on the same units: difference, paired bootstrap 95% interval, sign-flip permutation
    p-value, and whether each seed's difference (seeds paired in order) has the sign of the mean difference."""
    num_a, den_a = unit_values(method, metric, intended, window)
    num_b, den_b = unit_values(reference, metric, intended, window)
    if den_a.shape != den_b.shape or not np.allclose(den_a, den_b):
        raise ValueError(f"{metric.name}: method and reference were not run on the same units")
    if den_a.size == 0:
        return {"diff": None, "ci95": None, "p": None, "seeds_agree": None, "units": 0}
    d = num_a.mean(axis=0) - num_b.mean(axis=0)  # per-unit difference of seed means
    diff = _ratio(d, den_a)
    boots = _boot_ratios(d, den_a, _draws(den_a.size, n, seed))
    rng = np.random.default_rng(seed + 1)
    flips = rng.choice((-1.0, 1.0), size=(permutations, d.size))
    null = (flips * d).sum(axis=1) / den_a.sum()
    p = float((np.sum(np.abs(null) >= abs(diff) - 1e-12) + 1) / (permutations + 1))
    seed_diffs = [_ratio(num_a[s], den_a) - _ratio(num_b[s], den_a) for s in range(min(len(num_a), len(num_b)))]
    agree = bool(diff != 0 and all(np.sign(x) == np.sign(diff) for x in seed_diffs))
    better = diff > 0 if metric.higher_is_better else diff < 0
    return {
        "diff": diff,
        "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
        "p": p,
        "seed_diffs": seed_diffs,
        "seeds_agree": agree,
        "better": bool(better) if diff != 0 else None,
        "units": int(den_a.size),
    }


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (None stays None)."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[float | None] = [None] * len(pvalues)
    running, m = 0.0, len(present)
    for k, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


def verdict(comparison: dict[str, Any], alpha: float = 0.05) -> str:
    """'better' / 'worse' only when the adjusted p is below alpha, the interval excludes 0 and every seed agrees;
    otherwise 'no evidence'."""
    p = comparison.get("p_holm", comparison.get("p"))
    ci = comparison.get("ci95")
    if p is None or ci is None or comparison.get("better") is None:
        return "no evidence"
    if p < alpha and (ci[0] > 0 or ci[1] < 0) and comparison.get("seeds_agree"):
        return "better" if comparison["better"] else "worse"
    return "no evidence"


def compare(
    groups: Mapping[str, Sequence[Rows]],
    pairs: Sequence[tuple[str, str]],
    intended: str,
    *,
    metrics: Sequence[Metric] = METRICS,
    window: int = 4,
    n: int = BOOTSTRAP,
) -> dict[str, Any]:
    """Intervals for every method (``groups``: name -> one Rows per seed) and paired comparisons (method,
    reference) per metric, Holm-adjusted across the pairs of each metric."""
    out: dict[str, Any] = {
        "intervals": {
            name: {m.name: interval(runs, m, intended, window=window, n=n) for m in metrics}
            for name, runs in groups.items()
        },
        "comparisons": [],
    }
    rows: list[dict[str, Any]] = [{"method": a, "reference": b, "metrics": {}} for a, b in pairs]
    for m in metrics:
        results = [paired(groups[a], groups[b], m, intended, window=window, n=n) for a, b in pairs]
        for row, res, adj in zip(rows, results, holm([r["p"] for r in results]), strict=True):
            res["p_holm"] = adj
            res["verdict"] = verdict(res)
            row["metrics"][m.name] = res
    out["comparisons"] = rows
    return out
