import random
import threading

import pytest

from app.monitor.latency import LatencySpikeDetector

KEY = ("adapter-a", "total")


def feed(det, values, key=KEY):
    return [det.observe(key, v) for v in values]


def test_warmup_gives_no_verdict_even_for_huge_values():
    det = LatencySpikeDetector(warmup=20)
    verdicts = feed(det, [0.1] * 19 + [50.0])
    assert all(not v.spike and v.median is None and v.threshold is None for v in verdicts)
    after = det.observe(KEY, 0.1)  # 20 values seen: verdicts start
    assert after.median is not None and after.threshold is not None


def test_spike_detected_against_noisy_window():
    rng = random.Random(0)
    det = LatencySpikeDetector(window=100, warmup=20)
    verdicts = feed(det, [rng.gauss(0.5, 0.02) for _ in range(100)])
    assert sum(v.spike for v in verdicts) <= 1  # ~0.13 % one-sided false-positive rate at k = 3
    spike = det.observe(KEY, 0.8)
    assert spike.spike
    assert spike.median == pytest.approx(0.5, abs=0.01)
    assert 0.5 < spike.threshold < 0.8
    assert not det.observe(KEY, 0.52).spike


def test_mad_zero_guard_constant_latencies():
    det = LatencySpikeDetector(warmup=20)
    feed(det, [0.1] * 30)
    jitter = det.observe(KEY, 0.1001)  # MAD = 0: without the floor any jitter would be a spike
    assert not jitter.spike
    assert jitter.threshold == pytest.approx(0.1 + 3 * 0.05 * 0.1)  # relative floor
    assert det.observe(KEY, 0.2).spike


def test_absolute_floor_when_median_is_zero():
    det = LatencySpikeDetector(warmup=5)
    feed(det, [0.0] * 10)
    assert not det.observe(KEY, 2e-4).spike
    assert det.observe(KEY, 1e-3).spike


def test_level_shift_becomes_new_normal():
    det = LatencySpikeDetector(window=40, warmup=20)
    feed(det, [0.1 + 0.001 * (i % 5) for i in range(40)])
    shifted = feed(det, [0.3 + 0.001 * (i % 5) for i in range(60)])
    assert shifted[0].spike
    assert not any(v.spike for v in shifted[-20:])  # after half a window the median has moved


def test_keys_are_independent():
    det = LatencySpikeDetector(warmup=20)
    feed(det, [1.0] * 30, key=("a", "total"))
    other = det.observe(("a", "per_token"), 100.0)
    assert other.threshold is None and not other.spike
    assert det.observe(("a", "total"), 100.0).spike


def test_non_finite_values_are_ignored_and_reset_restarts_warmup():
    det = LatencySpikeDetector(warmup=3)
    feed(det, [0.1, 0.1, 0.1])
    nan = det.observe(KEY, float("nan"))
    assert not nan.spike and nan.threshold is None
    assert det.observe(KEY, 0.1).threshold is not None
    det.reset(KEY)
    assert det.observe(KEY, 0.1).threshold is None


def test_window_median_tracks_sliding_window():
    det = LatencySpikeDetector(window=5, warmup=5)
    feed(det, [1, 2, 3, 4, 5, 100, 101, 102])
    assert det.observe(KEY, 0).median == 100  # window is [4, 5, 100, 101, 102]


def test_thread_safe_concurrent_observe():
    det = LatencySpikeDetector(window=50, warmup=5)

    def work():
        for i in range(500):
            det.observe(KEY, 0.1 + 0.001 * (i % 7))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    win = det._windows[KEY]
    assert win.seen == 2000
    assert len(win.order) == 50 and sorted(win.order) == win.sorted


def test_invalid_parameters_rejected():
    with pytest.raises(ValueError):
        LatencySpikeDetector(window=2)
    with pytest.raises(ValueError):
        LatencySpikeDetector(k=0)
