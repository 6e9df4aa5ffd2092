"""Hampel-filter latency-spike detection, one rolling window per key.

Why a Hampel filter: latency distributions are skewed and heavy-tailed, so mean/std thresholds are dragged
around by the very spikes they should flag. The median and the MAD (median absolute deviation) are robust to
up to half the window being outliers, and ``1.4826 * MAD`` estimates the standard deviation for Gaussian noise,
so ``k = 3`` reads as "three sigmas above typical".

Rules (per key; the caller keys by ``(adapter, kind)`` with kind ``"total"`` or ``"per_token"``):

* A new value ``x`` is judged against the window *before* it is added:
  spike iff ``x > median + k * scale``.
* ``scale = max(1.4826 * MAD, rel_floor * |median|, abs_floor)``. The floors guard MAD = 0 (e.g. a cache or a
  stub that answers in exactly the same time): without them any jitter at all would be a "spike".
  With the defaults a value must exceed the median by at least 15 % (``3 * 0.05``) and by at least
  0.3 ms (``3 * 1e-4`` s, when latencies are in seconds) to count.
* Warm-up: no verdict (``median``/``threshold`` are ``None``) until ``warmup`` values were seen for the key.
* Spikes are added to the window too, so a lasting level shift becomes the new normal after about half a
  window instead of alarming forever.
* Non-finite values (NaN/inf) get no verdict and are not added.

Cost is O(window) per observation (a sorted copy of the window is maintained with bisect). Thread-safe.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass

MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4): MAD * this estimates sigma for Gaussian data


@dataclass
class SpikeVerdict:
    """Outcome for one observation; ``median``/``threshold`` are None while the key is warming up."""

    spike: bool
    value: float
    median: float | None
    threshold: float | None


class _Window:
    """The last ``size`` values in arrival order plus the same values kept sorted."""

    __slots__ = ("order", "seen", "sorted")

    def __init__(self, size: int):
        self.order: deque[float] = deque(maxlen=size)
        self.sorted: list[float] = []
        self.seen = 0

    def add(self, value: float) -> None:
        if len(self.order) == self.order.maxlen:
            oldest = self.order[0]
            del self.sorted[bisect_left(self.sorted, oldest)]
        self.order.append(value)
        insort(self.sorted, value)
        self.seen += 1

    def median_and_mad(self) -> tuple[float, float]:
        values = self.sorted
        median = _median_sorted(values)
        # Deviations below and above the median are each already sorted (after reversing the left part), so this
        # sort is a linear-time merge of two runs.
        split = bisect_left(values, median)
        deviations = [median - v for v in reversed(values[:split])] + [v - median for v in values[split:]]
        deviations.sort()
        return median, _median_sorted(deviations)


def _median_sorted(values: list[float]) -> float:
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else 0.5 * (values[mid - 1] + values[mid])


class LatencySpikeDetector:
    """Flags latency values far above the recent median of their key (see module docstring for the rules)."""

    def __init__(
        self, window: int = 200, k: float = 3.0, warmup: int = 20, rel_floor: float = 0.05, abs_floor: float = 1e-4
    ):
        if window < 3:
            raise ValueError("window must be >= 3")
        if not k > 0:
            raise ValueError("k must be > 0")
        if warmup < 1:
            raise ValueError("warmup must be >= 1")
        if rel_floor < 0 or abs_floor < 0:
            raise ValueError("floors must be >= 0")
        self.window = window
        self.k = k
        self.warmup = warmup
        self.rel_floor = rel_floor
        self.abs_floor = abs_floor
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()

    def observe(self, key: tuple[str, str], value: float) -> SpikeVerdict:
        """Judge ``value`` against the key's window, then add it to the window."""
        value = float(value)
        if not math.isfinite(value):
            return SpikeVerdict(False, value, None, None)
        with self._lock:
            win = self._windows.get(key)
            if win is None:
                win = self._windows[key] = _Window(self.window)
            if win.seen < self.warmup:
                win.add(value)
                return SpikeVerdict(False, value, None, None)
            median, mad = win.median_and_mad()
            scale = max(MAD_TO_SIGMA * mad, self.rel_floor * abs(median), self.abs_floor)
            threshold = median + self.k * scale
            win.add(value)
        return SpikeVerdict(value > threshold, value, median, threshold)

    def reset(self, key: tuple[str, str] | None = None) -> None:
        """Forget one key's history (it warms up again), or every key's."""
        with self._lock:
            if key is None:
                self._windows.clear()
            else:
                self._windows.pop(key, None)
