import copy
import json
import math

import numpy as np
import pytest

from app.monitor import drift
from app.monitor.calibration import calibrate_limits, calibrate_threshold
from app.monitor.drift import (
    Baseline,
    DriftParams,
    Observation,
    standardized_statistic,
    thresholds,
    update,
)

# A formal, polite, reserved persona: (mean, std) of each signal in its exemplars' population.
PERSONA = {"distance": (0.30, 0.05), "formality": (0.80, 0.06), "politeness": (0.85, 0.05), "warmth": (0.40, 0.07)}
CASUAL = {"formality": 0.25, "politeness": 0.50, "warmth": 0.90}
DIMS = ("formality", "politeness", "warmth")


def make_baseline(rng, n=20, spec=PERSONA):
    distances = list(rng.normal(*spec["distance"], size=n))
    dims = [{d: float(rng.normal(*spec[d])) for d in DIMS} for _ in range(n)]
    return Baseline.from_exemplars(distances, dims)


def in_control(rng, b: Baseline) -> Observation:
    """A turn drawn from the baseline's own (normal) distribution."""
    return Observation(
        float(rng.normal(b.distance_mean, b.distance_std)),
        *(float(rng.normal(b.dims_mean[d], b.dims_std[d])) for d in DIMS),
    )


def run(observations, baseline, params=None):
    state, reports = None, []
    for obs in observations:
        state, report = update(state, obs, baseline, params)
        reports.append(report)
    return state, reports


def onsets(reports):
    """Turns (1-based) at which the alert switched on."""
    out, before = [], False
    for r in reports:
        if r.alert and not before:
            out.append(r.turns)
        before = r.alert
    return out


def empirical_arl(fire, draw, n_streams=2000, horizon=8000, seed=12345):
    """Independent brute-force ARL: run streams until each alarms (mean of run lengths, censored MLE)."""
    rng = np.random.default_rng(seed)
    tau = np.full(n_streams, np.inf)
    alive = np.ones(n_streams, bool)
    stats = fire.init(n_streams)
    t = 0
    while t < horizon and alive.any():
        x = draw(rng, (256, n_streams))
        for i in range(256):
            t += 1
            hit = alive & fire.step(stats, x[i])
            tau[hit] = t
            alive &= ~hit
    alarms = np.isfinite(tau)
    return (tau[alarms].sum() + (~alarms).sum() * horizon) / alarms.sum()


class Cusum:
    def __init__(self, k, h, lam=0.3, limit=math.inf):
        self.k, self.h, self.lam, self.limit = k, h, lam, limit

    def init(self, n):
        return {"s": np.zeros(n), "e": np.zeros(n)}

    def step(self, st, x):
        st["s"] = np.maximum(0.0, st["s"] + x - self.k)
        st["e"] = self.lam * x + (1 - self.lam) * st["e"]
        return (st["s"] > self.h) | (st["e"] > self.limit)


def normal_draw(rng, shape):
    return np.clip(rng.standard_normal(shape), -drift.S_CAP, drift.S_CAP)


# ---------------------------------------------------------------------------------------------------- calibration


def test_calibrated_cusum_threshold_matches_theory_and_monte_carlo():
    h = calibrate_threshold(0.5, 1000)
    # Siegmund's approximation for N(0,1) with k = 0.5: ARL(h) = (exp(b) - b - 1) / 0.5 with b = h + 1.166.
    b = h + 1.166
    assert (math.exp(b) - b - 1) / 0.5 == pytest.approx(1000, rel=0.15)
    assert empirical_arl(Cusum(0.5, h), normal_draw) == pytest.approx(1000, rel=0.3)
    assert calibrate_threshold(0.5, 1000) == h  # cached and deterministic
    assert calibrate_threshold(0.5, 100) < h < calibrate_threshold(0.5, 5000)


def test_combined_limits_give_target_arl():
    h, limit = thresholds(DriftParams(k_ref=0.5, arl0=1000.0))
    assert (h, limit) == calibrate_limits(0.5, 0.3, 1000)
    assert h > calibrate_threshold(0.5, 1000)  # sharing the false-alarm budget with the EWMA raises h
    assert empirical_arl(Cusum(0.5, h, 0.3, limit), normal_draw) == pytest.approx(1000, rel=0.3)


def test_bootstrap_calibration_from_null_samples():
    rng = np.random.default_rng(3)
    null = list(rng.standard_t(4, size=3000) / math.sqrt(2.0))  # heavy-tailed, unit variance
    h = calibrate_threshold(0.5, 500, null_samples=null)
    pool = np.clip(np.asarray(null), -drift.S_CAP, drift.S_CAP)

    def draw(r, shape):
        return pool[r.integers(0, pool.size, size=shape)]

    assert empirical_arl(Cusum(0.5, h), draw, horizon=5000) == pytest.approx(500, rel=0.3)
    with pytest.raises(ValueError):
        calibrate_threshold(0.5, 500, null_samples=[0.1, 0.2])


def test_statistic_is_standard_normal_in_control():
    """With mean/std estimated from few exemplars, the t-based statistic is still N(0,1) over personas."""
    rng = np.random.default_rng(7)
    wide = {"distance": (0.4, 0.08), "formality": (0.5, 0.12), "politeness": (0.5, 0.12), "warmth": (0.5, 0.12)}
    stats = []
    for _ in range(4000):
        b = make_baseline(rng, n=8, spec=wide)
        obs = Observation(float(rng.normal(*wide["distance"])), *(float(rng.normal(*wide[d])) for d in DIMS))
        stats.append(standardized_statistic(obs, b))
    stats = np.asarray(stats)
    assert abs(stats.mean()) < 0.07
    assert stats.std() == pytest.approx(1.0, abs=0.07)
    assert np.mean(stats > 2.0) == pytest.approx(0.0228, abs=0.01)


def test_t_distribution_helper():
    assert drift._t_abs_cdf(1.0, 1) == pytest.approx(0.5)  # Cauchy quartile
    assert drift._t_abs_cdf(2.0, 2) == pytest.approx(2 / math.sqrt(6))
    assert drift._upper_tail(2.015, 5) == pytest.approx(0.05, abs=1e-4)
    assert drift._upper_tail(2.228, 10) == pytest.approx(0.025, abs=1e-4)
    assert drift._upper_tail(-1.0, None) == pytest.approx(0.8413, abs=1e-4)


# ------------------------------------------------------------------------------------------------------ detection


def test_in_control_stream_has_no_alarm():
    rng = np.random.default_rng(2024)
    b = make_baseline(rng)
    _, reports = run([in_control(rng, b) for _ in range(500)], b)
    assert not any(r.alert for r in reports)
    assert abs(np.mean([r.score for r in reports])) < 0.3
    assert reports[-1].turns == 500


def test_switch_to_different_tone_alarms_within_three_turns():
    rng = np.random.default_rng(11)
    b = make_baseline(rng)
    switch = 60
    turns = [in_control(rng, b) for _ in range(switch)]
    for _ in range(20):
        o = in_control(rng, b)
        turns.append(
            Observation(
                o.persona_distance + 4 * b.distance_std, *(CASUAL[d] + float(rng.normal(0, 0.03)) for d in DIMS)
            )
        )
    _, reports = run(turns, b)
    assert not any(r.alert for r in reports[:switch])
    first = onsets(reports)[0]
    assert switch < first <= switch + 3
    assert reports[first - 1].detector in ("cusum", "ewma")
    assert all(r.alert for r in reports[first - 1 :])  # latched while the drift lasts
    assert reports[-1].score > reports[switch - 1].score + 2


def test_distance_only_shift_is_detected():
    rng = np.random.default_rng(5)
    b = make_baseline(rng)
    turns = [in_control(rng, b) for _ in range(30)]
    for _ in range(10):
        o = in_control(rng, b)
        turns.append(Observation(o.persona_distance + 4 * b.distance_std, o.formality, o.politeness, o.warmth))
    _, reports = run(turns, b)
    assert 30 < onsets(reports)[0] <= 35


def test_alert_clears_after_cooldown_and_reset():
    rng = np.random.default_rng(1)
    b = make_baseline(rng)
    off = [Observation(0.9, 0.1, 0.2, 0.95)] * 5
    state, reports = run(off, b)
    assert reports[-1].alert
    back = [in_control(rng, b) for _ in range(40)]
    for obs in back:
        state, report = update(state, obs, b)
    assert not report.alert and report.detector is None
    state, _ = run(off, b)
    cleared = drift.reset(state)
    assert not cleared["alert"] and cleared["cusum"] == 0.0 and cleared["turns"] == 5
    _, report = update(cleared, in_control(rng, b), b)
    assert not report.alert


def test_single_outlier_cannot_fire_the_cusum_and_any_alert_clears():
    rng = np.random.default_rng(9)
    b = make_baseline(rng)
    turns = [in_control(rng, b) for _ in range(10)] + [Observation(1.5, 0.0, 0.0, 1.0)]
    turns += [in_control(rng, b) for _ in range(10)]
    _, reports = run(turns, b)
    assert reports[10].cusum < reports[10].threshold  # the clip bounds one turn's contribution
    assert all(r.detector != "cusum" for r in reports)
    assert not reports[-1].alert  # the EWMA may flag it, but the latch clears after the cooldown


def test_no_persona_mode_detects_mid_session_switch():
    rng = np.random.default_rng(4)

    def formal():
        return Observation(None, *(float(np.clip(rng.normal(m, 0.03), 0, 1)) for m in (0.85, 0.9, 0.3)))

    def casual():
        return Observation(None, *(float(np.clip(rng.normal(CASUAL[d], 0.03), 0, 1)) for d in DIMS))

    switch = 25
    _, reports = run([formal() for _ in range(switch)] + [casual() for _ in range(15)], None)
    assert all(r.score == 0.0 and r.cusum == 0.0 for r in reports[:3])  # warm-up: the reference, not scored
    assert not any(r.alert for r in reports[:switch])
    assert switch < onsets(reports)[0] <= switch + 6


def test_no_persona_steady_session_stays_quiet():
    rng = np.random.default_rng(8)
    turns = [
        Observation(None, *(float(np.clip(rng.normal(m, 0.04), 0, 1)) for m in (0.6, 0.7, 0.5))) for _ in range(300)
    ]
    _, reports = run(turns, None)
    assert not any(r.alert for r in reports)


# -------------------------------------------------------------------------------------------------- state & misc


def test_state_round_trips_through_json_and_input_is_not_mutated():
    rng = np.random.default_rng(6)
    b = make_baseline(rng)
    turns = [in_control(rng, b) for _ in range(15)] + [Observation(0.9, 0.1, 0.2, 0.95)] * 5
    direct, via_json = None, None
    for obs in turns:
        before = copy.deepcopy(via_json)
        via_json_new, r_json = update(via_json, obs, b)
        assert via_json == before
        via_json = json.loads(json.dumps(via_json_new))
        direct, r_direct = update(direct, obs, b)
        assert r_json == r_direct
    assert direct == via_json
    assert set(r_direct.public()) == {
        "score",
        "alert",
        "detector",
        "cusum",
        "threshold",
        "ewma_limit",
        "dispersion",
        "turns",
    }
    json.dumps(r_direct.public())
    # No-persona state (self reference) round-trips too.
    state, _ = run([Observation(None, 0.5, 0.5, 0.5)] * 4, None)
    assert json.loads(json.dumps(state)) == state
    assert update(None, turns[0], b)[0] == update({"v": 999}, turns[0], b)[0]  # unknown version: fresh start


def test_dispersion_high_for_alternating_tone_low_for_steady():
    rng = np.random.default_rng(10)
    robotic = (0.95, 0.6, 0.05)
    steady = [Observation(None, *(float(v + rng.normal(0, 0.02)) for v in (0.7, 0.8, 0.5))) for _ in range(12)]
    swing = [Observation(None, *(robotic if i % 2 else tuple(CASUAL[d] for d in DIMS))) for i in range(12)]
    _, steady_reports = run(steady, None)
    _, swing_reports = run(swing, None)
    assert steady_reports[-1].dispersion < 0.08
    assert swing_reports[-1].dispersion > 0.5
    assert 0.0 <= swing_reports[-1].dispersion <= 1.0
    assert steady_reports[0].dispersion == 0.0  # one turn: no spread yet


def test_baseline_helpers_and_validation():
    b = Baseline.from_exemplars([0.1, 0.2, 0.3], [{"formality": 0.5, "politeness": 0.5, "warmth": 0.5}] * 3)
    assert b.n == 3 and b.distance_mean == pytest.approx(0.2) and b.dims_std["warmth"] == 0.0
    assert Baseline.from_dict(json.loads(json.dumps(b.to_dict()))) == b
    # std floors: identical exemplars do not make every wobble infinite.
    assert standardized_statistic(Observation(0.21, 0.51, 0.5, 0.5), b) < 1.0
    no_distance = Baseline.from_exemplars([], [{"formality": 0.5, "politeness": 0.5, "warmth": 0.5}] * 5)
    assert no_distance.distance_mean is None
    assert standardized_statistic(Observation(1.9, 0.5, 0.5, 0.5), no_distance) < 1.0  # distance ignored
    with pytest.raises(ValueError):
        update(None, Observation(None, float("nan"), 0.5, 0.5), b)
    with pytest.raises(ValueError):
        DriftParams(ewma_lambda=0)


def test_custom_params_change_thresholds():
    params = DriftParams(arl0=200.0)
    rng = np.random.default_rng(0)
    b = make_baseline(rng)
    _, report = update(None, in_control(rng, b), b, params)
    assert report.threshold == thresholds(params)[0] < thresholds()[0]
