"""Statistics shared by the style head's trainer and its evaluation (its own module so neither imports the other)."""

from __future__ import annotations

import hashlib

import numpy as np


def set_hash_fraction(key: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for a set name: held-out splits that do not move between runs."""
    return hashlib.sha256(f"{seed}:{key}".encode()).digest()[0] / 256.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; 0 where either side is constant (scipy would answer NaN)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)
