"""Stress suite: the metrics compute, leakage finds a planted dependence (and none where there is none), and the
suite runs end to end on a tiny random model through the real engine (the scorer is a stand-in)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from app.evaluation import stress_metrics as sm
from app.evaluation.report_run import EvalContext
from app.evaluation.stress import (
    StressSuite,
    load_suite,
    parse_adapters,
    parse_methods,
    run_stress,
    statistics,
    summarize_stress,
)
from app.evaluation.stress_report import render_markdown
from app.metrics import Metrics

DATA = Path(__file__).resolve().parents[2] / "data" / "stress"


def test_leakage_detects_a_planted_dependence():
    rng = np.random.default_rng(1)
    customer = rng.uniform(0, 1, 80)
    mirrored = 0.2 + 0.5 * customer + rng.normal(0, 0.05, 80)  # the bot follows its customer
    held = 0.6 + rng.normal(0, 0.05, 80)  # the bot keeps its voice
    leak = sm.leakage(customer, mirrored)
    assert leak["spearman_rho"] > 0.8 and leak["p_value"] < 0.01
    assert leak["slope"] == pytest.approx(0.5, abs=0.05)
    calm = sm.leakage(customer, held)
    assert abs(calm["spearman_rho"]) < 0.3 and calm["p_value"] > 0.01
    assert abs(calm["slope"]) < 0.05


def test_leakage_without_variation_or_pairs():
    assert sm.leakage([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])["spearman_rho"] is None
    assert sm.leakage([0.1, 0.2], [0.1, 0.2])["slope"] is None
    with pytest.raises(ValueError):
        sm.leakage([0.1, 0.2, 0.3], [0.1])


def test_spearman_handles_ties_like_scipy():
    from scipy.stats import spearmanr

    x = [1, 2, 2, 3, 4, 4, 4, 5]
    y = [2, 1, 3, 3, 5, 4, 6, 7]
    assert sm.leakage(x, y, permutations=0)["spearman_rho"] == pytest.approx(spearmanr(x, y).statistic)


def test_windows_and_alerts():
    assert sm.worst_window([0.1, 0.1, 0.9, 0.9, 0.1], window=2) == {"mean": pytest.approx(0.9), "start": 2}
    assert sm.worst_window([0.2, 0.4], window=4)["mean"] == pytest.approx(0.3)
    assert sm.worst_window([], window=4) is None
    assert sm.alert_counts([False, True, True, False, True]) == {"turns": 5, "alerted_turns": 3, "onsets": 2}
    assert sm.per_100(3, 60) == pytest.approx(5.0)
    assert sm.intended_label_rate(["friendly", "formal", "friendly", "casual"], "friendly") == 0.5


def _row(style, label, distance, f, cf, alert=False):
    return {
        "style": style,
        "label": label,
        "match": distance < 0.5,
        "distance": distance,
        "formality": f,
        "politeness": 0.5,
        "warmth": 0.5,
        "customer_formality": cf,
        "customer_politeness": cf,
        "alert": alert,
        "dispersion": 0.1,
    }


def test_summary_from_rows():
    single = [_row("angry", "casual", 0.8, 0.1 + 0.1 * i, 0.1 * i) for i in range(5)]
    single += [_row("polite", "friendly", 0.2, 0.12 + 0.1 * i, 0.1 * i) for i in range(5)]
    sessions = [[_row("terse", "friendly", d, 0.5, 0.3, alert=d > 0.6) for d in (0.2, 0.3, 0.9, 0.9, 0.2)]]
    s = summarize_stress(single, sessions, "friendly", window=2)
    one, ses = s["single_turn"], s["sessions"]
    assert one["intended_label_rate"] == 0.5
    assert one["by_style"]["angry"]["intended_label_rate"] == 0.0
    assert one["by_style"]["polite"]["intended_label_rate"] == 1.0
    assert one["leakage"]["formality"]["spearman_rho"] > 0.9  # every answer mirrors its customer
    assert ses["turns"] == 5 and ses["sessions_alerted"] == 1
    assert ses["alerted_turns_per_100"] == pytest.approx(40.0)
    assert ses["alert_onsets_per_100"] == pytest.approx(20.0)
    assert ses["worst_window"]["max"] == pytest.approx(0.9)


def test_load_suite_cuts_per_style_and_turns():
    suite = load_suite(DATA, per_style=2, sessions=3, turns=5)
    styles = [m["style"] for m in suite.messages]
    assert len(styles) == 20 and all(styles.count(s) == 2 for s in set(styles))
    assert len(suite.sessions) == 3 and all(len(s["turns"]) == 5 for s in suite.sessions)
    assert parse_adapters("base,lora-r4=study/lora-r4") == {"base": None, "lora-r4": "study/lora-r4"}


def test_plus_joined_paths_are_one_methods_seeds():
    runs, methods = parse_methods("base, dora=study/dora-r8/seed13+study/dora-r8/seed14")
    assert runs == {"base": None, "dora-seed13": "study/dora-r8/seed13", "dora-seed14": "study/dora-r8/seed14"}
    assert methods == {"base": ["base"], "dora": ["dora-seed13", "dora-seed14"]}
    with pytest.raises(ValueError, match="two seeds"):
        parse_methods("x=a/seed1+b/seed1")
    with pytest.raises(ValueError, match="no adapters"):
        parse_methods(" , ")


class FakeScorer:
    """Deterministic stand-in for ToneScorer: dimensions from the text's letters, persona distance from length."""

    def __init__(self):
        persona = SimpleNamespace(
            loo_distances=[0.3, 0.35, 0.4],
            exemplar_dims=[{"formality": 0.4, "politeness": 0.7, "warmth": 0.8}] * 3,
            exemplar_labels=["friendly", "friendly", "formal"],
        )
        self.personas = {"p": persona}

    def get_persona(self, name):
        return self.personas[name]

    async def score(self, texts, persona=None, label=None):
        out = []
        for text in texts:
            letters = [c for c in text if c.isalpha()] or ["a"]
            upper = sum(c.isupper() for c in letters) / len(letters)
            distance = min(1.0, len(text) / 400)
            out.append(
                {
                    "label": "friendly" if upper < 0.1 else "casual",
                    "probs": {},
                    "formality": upper,
                    "politeness": 1 - upper,
                    "warmth": 0.5,
                    "persona_distance": distance,
                    "persona_match": distance < 0.5,
                }
            )
        return out


async def test_stress_runs_on_a_tiny_model(tiny):
    from app.engine.worker import Engine

    model, tokenizer = tiny
    engine = Engine(model, tokenizer, device="cpu", metrics=Metrics(), max_wait_ms=5)
    engine.start()
    ctx = EvalContext(engine, tokenizer, None, FakeScorer(), "tiny", "cpu")
    full = load_suite(DATA, per_style=1, sessions=2, turns=4)
    suite = StressSuite(full.messages, full.sessions, "test")
    try:
        from app.evaluation.stress import customer_tones, intended_label_of

        customer = await customer_tones(ctx, suite)
        assert intended_label_of(ctx, "p") == "friendly"
        run = await run_stress(ctx, "base", suite, "p", customer, intended="friendly", max_tokens=6, window=2)
    finally:
        engine.stop()
    s = run["summary"]
    assert s["single_turn"]["answers"] == 10 and s["sessions"]["turns"] == 8
    assert 0.0 <= s["single_turn"]["intended_label_rate"] <= 1.0
    assert s["sessions"]["alerted_turns_per_100"] is not None
    assert s["sessions"]["worst_window"]["max"] is not None
    assert set(s["single_turn"]["leakage"]) == {"formality", "politeness"}
    assert s["cost"]["requests"] == 18
    assert all(r["customer"] and "customer_formality" in r for r in run["single"])
    report = {
        "meta": {
            "suite": "test",
            "persona": "p",
            "intended_label": "friendly",
            "messages": 10,
            "sessions": 2,
            "session_turns": 8,
            "max_tokens": 6,
            "window": 2,
            "base_model": "tiny",
            "device": "cpu",
            "scorer_version": "x",
            "created": "now",
        },
        "adapters": {"base": s},
        "rows": {"base": run, "again": run},
    }
    assert "| base |" in render_markdown(report)
    # the same answers as a second method: intervals for both, a zero difference and no verdict
    report["statistics"] = statistics(report, {"base": ["base"], "twice": ["base", "again"]}, None, window=2)
    paired = report["statistics"]["comparisons"][0]["metrics"]["single.intended_label_rate"]
    assert paired["diff"] == 0 and paired["verdict"] == "no evidence"
    iv = report["statistics"]["intervals"]["twice"]["single.intended_label_rate"]
    assert iv["value"] == s["single_turn"]["intended_label_rate"] and iv["units"] == 10
    md = render_markdown(report)
    assert "## Intervals" in md and "## Paired with `base`" in md
    with pytest.raises(ValueError, match="reference"):
        statistics(report, {"base": ["base"]}, "nope")


async def test_runs_together_share_one_stream(tiny):
    """--together: every run's requests at once (the engine batches them in one forward); each run still gets its
    own rows and summary, and its cost says it was shared."""
    from app.engine.worker import Engine
    from app.evaluation.stress import evaluate_stress

    model, tokenizer = tiny
    engine = Engine(model, tokenizer, device="cpu", metrics=Metrics(), max_wait_ms=5)
    engine.start()
    ctx = EvalContext(engine, tokenizer, None, FakeScorer(), "tiny", "cpu")
    full = load_suite(DATA, per_style=1, sessions=2, turns=3)
    suite = StressSuite(full.messages, full.sessions, "test")
    try:
        report = await evaluate_stress(
            {"base": None, "tiny": None},
            suite,
            "p",
            context=ctx,
            max_tokens=4,
            window=2,
            out_dir=None,
            methods={"both": ["base", "tiny"]},
            together=True,
        )
    finally:
        engine.stop()
    for name in ("base", "tiny"):
        summary = report["adapters"][name]
        assert summary["single_turn"]["answers"] == 10 and summary["sessions"]["turns"] == 6
        assert summary["cost"]["shared_with"] == 2 and summary["cost"]["requests"] == 16
    assert report["statistics"]["intervals"]["both"]["single.intended_label_rate"]["units"] == 10
