"""Tone-consistency stress metrics: pure functions over scored answers (no model, no I/O).

* intended-label rate: share of answers whose tone label is the persona's intended label;
* worst window: the largest rolling mean of persona distance over ``window`` consecutive turns of a session (the
  stretch where the voice strayed furthest);
* drift alerts per 100 turns: alerted turns, and alert onsets (a turn alerted after one that was not);
* tone leakage: how strongly a customer-side tone dimension predicts the same dimension of the answer, as an OLS
  slope, Pearson r, Spearman ρ and a permutation p-value for ρ. A voice that holds has slope ≈ 0 and ρ ≈ 0; a bot
  that mirrors its customer has ρ > 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def rate(flags: Sequence[bool]) -> float | None:
    return float(np.mean([bool(f) for f in flags])) if len(flags) else None


def intended_label_rate(labels: Sequence[str], intended: str) -> float | None:
    return rate([label == intended for label in labels])


def rolling_means(values: Sequence[float], window: int) -> list[float]:
    """Means of every run of ``window`` consecutive values (one mean of all when shorter than the window)."""
    if not values:
        return []
    if len(values) <= window:
        return [float(np.mean(values))]
    kernel = np.ones(window) / window
    return [float(x) for x in np.convolve(np.asarray(values, dtype=float), kernel, mode="valid")]


def worst_window(values: Sequence[float], window: int = 4) -> dict[str, Any] | None:
    """{"mean": the largest rolling mean, "start": its 0-based first turn} or None for no values."""
    means = rolling_means(values, window)
    if not means:
        return None
    start = int(np.argmax(means))
    return {"mean": means[start], "start": start}


def alert_counts(alerts: Sequence[bool]) -> dict[str, int]:
    onsets = sum(1 for i, a in enumerate(alerts) if a and (i == 0 or not alerts[i - 1]))
    return {"turns": len(alerts), "alerted_turns": sum(bool(a) for a in alerts), "onsets": onsets}


def per_100(count: int, turns: int) -> float | None:
    return 100.0 * count / turns if turns else None


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as Spearman's ρ needs."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    sx, sy = x.std(), y.std()
    if sx == 0 or sy == 0:
        return None
    return float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy))


def leakage(
    customer: Sequence[float], answer: Sequence[float], permutations: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Regression of the answer's tone dimension on the customer's: slope (answer units per customer unit),
    intercept, Pearson r, Spearman ρ, and a two-sided permutation p-value for ρ (``permutations`` shuffles of the
    answers, seeded). Needs ≥ 3 pairs and variation on both sides, else the statistics are None."""
    x = np.asarray(customer, dtype=float)
    y = np.asarray(answer, dtype=float)
    if x.shape != y.shape:
        raise ValueError("customer and answer need the same length")
    out: dict[str, Any] = {"n": len(x), "slope": None, "intercept": None, "pearson_r": None}
    out.update({"spearman_rho": None, "p_value": None})
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return out
    slope, intercept = np.polyfit(x, y, 1)
    rx, ry = _ranks(x), _ranks(y)
    rho = _pearson(rx, ry)
    out.update(slope=float(slope), intercept=float(intercept), pearson_r=_pearson(x, y), spearman_rho=rho)
    if rho is not None and permutations > 0:
        rng = np.random.default_rng(seed)
        rx_c = rx - rx.mean()
        denom = math.sqrt(float((rx_c**2).sum()) * float(((ry - ry.mean()) ** 2).sum()))
        shuffled = np.stack([rng.permutation(ry) for _ in range(permutations)])
        null = (shuffled - ry.mean()) @ rx_c / denom
        out["p_value"] = float((np.sum(np.abs(null) >= abs(rho) - 1e-12) + 1) / (permutations + 1))
    return out
