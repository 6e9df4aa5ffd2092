"""Intervals and paired tests of the stress suite (app/evaluation/stress_stats.py) on rows built by hand."""

from __future__ import annotations

import pytest

from app.evaluation import stress_stats as st


def _row(label: str, *, match: bool = True, distance: float = 0.5, alert: bool = False) -> dict:
    return {
        "label": label,
        "match": match,
        "distance": distance,
        "alert": alert,
        "dispersion": 0.1,
        "formality": 0.5,
        "politeness": 0.5,
        "warmth": 0.5,
    }


def _run(
    single_labels: list[str], session_labels: list[list[str]] | None = None, alerts: list[list[bool]] | None = None
):
    sessions = session_labels or [["friendly"] * 4]
    alerts = alerts or [[False] * len(s) for s in sessions]
    return {
        "single": [_row(x) for x in single_labels],
        "sessions": [
            [_row(x, alert=a) for x, a in zip(s, al, strict=True)] for s, al in zip(sessions, alerts, strict=True)
        ],
    }


SINGLE = st.BY_NAME["single.intended_label_rate"]
SESSIONS = st.BY_NAME["sessions.intended_label_rate"]
ALERTS = st.BY_NAME["sessions.alerted_turns_per_100"]


def test_interval_is_the_seed_mean_with_a_bootstrap_range_around_it():
    a = _run(["friendly"] * 30 + ["casual"] * 10)  # 0.75
    b = _run(["friendly"] * 20 + ["casual"] * 20)  # 0.50
    out = st.interval([a, b], SINGLE, "friendly", n=500)
    assert out["value"] == pytest.approx(0.625)
    assert out["per_seed"] == pytest.approx([0.75, 0.5])
    assert out["seed_sd"] == pytest.approx(0.1767767, rel=1e-5)
    lo, hi = out["ci95"]
    assert lo < 0.625 < hi and hi - lo < 0.4
    assert out["units"] == 40


def test_session_rates_pool_turns_like_the_summary():
    run = _run([], [["friendly"] * 2, ["casual", "casual", "casual", "friendly", "friendly", "friendly"]])
    out = st.interval([run], SESSIONS, "friendly", n=200)
    assert out["value"] == pytest.approx(5 / 8)  # pooled over 8 turns, not the mean of per-session rates (0.75)
    alerts = _run([], [["friendly"] * 4, ["friendly"] * 4], [[True, False, False, False], [False] * 4])
    assert st.interval([alerts], ALERTS, "friendly", n=200)["value"] == pytest.approx(12.5)


def test_identical_methods_show_no_difference():
    a = _run(["friendly", "casual"] * 20)
    res = st.paired([a, a], [a, a], SINGLE, "friendly", n=300, permutations=500)
    assert res["diff"] == 0 and res["p"] == 1.0
    assert st.verdict(res) == "no evidence"


def test_a_large_consistent_difference_is_better_and_significant():
    method = [_run(["friendly"] * 36 + ["casual"] * 4), _run(["friendly"] * 34 + ["casual"] * 6)]
    reference = [_run(["casual"] * 30 + ["friendly"] * 10), _run(["casual"] * 28 + ["friendly"] * 12)]
    res = st.paired(method, reference, SINGLE, "friendly", n=500, permutations=2000)
    assert res["diff"] == pytest.approx((0.9 + 0.85) / 2 - (0.25 + 0.3) / 2)
    assert res["ci95"][0] > 0 and res["p"] < 0.01 and res["seeds_agree"] and res["better"]
    assert st.verdict(res) == "better"


def test_lower_is_better_metrics_call_fewer_alerts_better():
    quiet = _run([], [["friendly"] * 4] * 20, [[False] * 4] * 20)
    noisy = _run([], [["friendly"] * 4] * 20, [[True, True, False, False]] * 20)
    res = st.paired([quiet], [noisy], ALERTS, "friendly", n=300, permutations=1000)
    assert res["diff"] == pytest.approx(-50.0) and res["better"] is True


def test_seeds_that_disagree_are_no_evidence_even_when_the_mean_differs():
    method = [_run(["friendly"] * 40), _run(["casual"] * 30 + ["friendly"] * 10)]  # 1.0, 0.25
    reference = [_run(["friendly"] * 20 + ["casual"] * 20), _run(["friendly"] * 20 + ["casual"] * 20)]  # 0.5, 0.5
    res = st.paired(method, reference, SINGLE, "friendly", n=300, permutations=1000)
    assert res["diff"] == pytest.approx(0.125) and res["seeds_agree"] is False
    assert st.verdict(res) == "no evidence"


def test_runs_on_different_suites_are_refused():
    with pytest.raises(ValueError, match="different suites"):
        st.interval([_run(["friendly"] * 3), _run(["friendly"] * 4)], SINGLE, "friendly")
    with pytest.raises(ValueError, match="same units"):
        st.paired([_run(["friendly"] * 3)], [_run(["friendly"] * 4)], SINGLE, "friendly")


def test_holm_adjusts_step_down_and_keeps_order():
    assert st.holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert st.holm([0.5, 0.5]) == [1.0, 1.0]


def test_compare_reports_intervals_and_adjusted_comparisons_per_metric():
    groups = {
        "lora": [_run(["casual"] * 20), _run(["casual"] * 18 + ["friendly"] * 2)],
        "dora": [_run(["friendly"] * 20), _run(["friendly"] * 19 + ["casual"])],
        "adalora": [_run(["casual"] * 19 + ["friendly"]), _run(["casual"] * 20)],
    }
    out = st.compare(groups, [("dora", "lora"), ("adalora", "lora")], "friendly", n=200)
    assert set(out["intervals"]) == {"lora", "dora", "adalora"}
    dora, adalora = (c["metrics"]["single.intended_label_rate"] for c in out["comparisons"])
    assert dora["verdict"] == "better" and dora["p_holm"] >= dora["p"]
    assert adalora["verdict"] == "no evidence"
