"""Evidence that the shipped persona adapters do their job, with the real SmolLM2 and the real tone scorer, on
held-out support questions (never trained on), served through the same Engine + AdapterRegistry as the server:

* each adapter's answers get its intended tone label in >= 80% of cases;
* base and every adapter differ measurably (labels / dimensions, and the texts themselves);
* a session that starts on support-friendly and is switched to support-robotic raises a drift alert within 4 turns
  of the switch, while a session that stays on support-friendly raises none (persona support-friendly);
* no empty, collapsed or repetitive output through any adapter.

One module fixture generates everything (greedy, max_tokens 48, batched): ~1-3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from app.evaluation.report import load_prompts
from app.evaluation.report_run import build_context, close_context, evaluate, run_session, sampling, user_text
from app.scoring.labels import DIMENSIONS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ADAPTER_ROOT = ROOT / "models" / "adapters"
HELDOUT = ROOT / "data" / "support" / "heldout_questions.jsonl"
INTENDED = {"support-friendly": "friendly", "support-formal": "formal", "support-robotic": "robotic"}
ADAPTERS = list(INTENDED)
N_SINGLE = 20  # held-out questions 1-20: single-turn answers; 21-36: the two drift sessions
MAX_TOKENS = 48
SWITCH_AFTER = 4  # turns on support-friendly before the switch to support-robotic
MAX_ALERT_DELAY = 4  # turns after the switch


@pytest.fixture(scope="module")
def results():
    prompts = load_prompts(HELDOUT)
    users = [user_text(p) for p in prompts[N_SINGLE:]]
    switch_plan = [("support-friendly", u) for u in users[:SWITCH_AFTER]] + [
        ("support-robotic", u) for u in users[SWITCH_AFTER : SWITCH_AFTER + MAX_ALERT_DELAY]
    ]
    stay_plan = [("support-friendly", u) for u in users[8:16]]

    async def run():
        ctx = await build_context(ADAPTERS, ADAPTER_ROOT, max_batch_size=24)
        try:
            report = await evaluate(["base", *ADAPTERS], prompts[:N_SINGLE], 0, 0, MAX_TOKENS, None, context=ctx)
            params = sampling(MAX_TOKENS)
            switch, stay = await asyncio.gather(
                run_session(ctx, switch_plan, "support-friendly", params),
                run_session(ctx, stay_plan, "support-friendly", params),
            )
            return {"report": report, "switch": switch, "stay": stay, "loaded": list(ctx.loaded)}
        finally:
            close_context(ctx)

    return asyncio.run(run())


def test_manifest_adapters_validate_and_load(results):
    manifest = json.loads((ADAPTER_ROOT / "manifest.json").read_text())
    assert sorted(e["name"] for e in manifest["adapters"]) == sorted(ADAPTERS)
    assert results["loaded"] == ADAPTERS  # inspect_adapter accepted each, and each installed on the engine


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapter_answers_get_the_intended_label(results, adapter):
    answers = results["report"]["answers"][adapter]
    assert len(answers) == N_SINGLE
    hits = [a["label"] == INTENDED[adapter] for a in answers]
    misses = [(a["label"], a["answer"]) for a in answers if a["label"] != INTENDED[adapter]]
    assert sum(hits) / len(hits) >= 0.8, misses


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_base_and_adapter_differ_measurably(results, adapter):
    report = results["report"]
    base, tuned = report["adapters"]["base"], report["adapters"][adapter]
    # label distributions: total variation distance
    tvd = 0.5 * sum(abs(base["label_share"][k] - tuned["label_share"][k]) for k in base["label_share"])
    dim_gap = max(abs(base["dimensions"][d]["mean"] - tuned["dimensions"][d]["mean"]) for d in DIMENSIONS)
    intended = INTENDED[adapter]
    if base["label_share"][intended] >= 0.7:
        # the base already answers in this voice (the formal one: 95% of its plain answers read formal), so the
        # label mix cannot move much; the adapter must keep the voice and the persona distance below decides
        assert tuned["label_share"][intended] >= base["label_share"][intended], (base, tuned)
    else:
        assert tvd >= 0.3 or dim_gap >= 0.1, (tvd, dim_gap, base["label_share"], tuned["label_share"])
    # and the adapter changes what is said, not only how it is scored
    pairs = zip(report["answers"]["base"], report["answers"][adapter], strict=True)
    identical = sum(a["answer"] == b["answer"] for a, b in pairs)
    assert identical <= N_SINGLE // 10
    # the adapter sounds like its persona: much closer to the persona's centroid than the base model's answers
    own = f"support-{INTENDED[adapter]}"
    distances = (base["persona_distance_mean"][own], tuned["persona_distance_mean"][own])
    assert distances[1] <= 0.8 * distances[0], distances


def test_switch_to_robotic_raises_drift_alert_and_staying_does_not(results):
    switch, stay = results["switch"], results["stay"]
    first = switch.first_alert_turn
    detail = [
        (a.adapter, a.tone["label"], d["cusum"], d["score"]) for a, d in zip(switch.answers, switch.drift, strict=True)
    ]
    assert first is not None, detail
    assert SWITCH_AFTER < first <= SWITCH_AFTER + MAX_ALERT_DELAY, detail
    stay_detail = [(a.tone["label"], d["cusum"], d["score"]) for a, d in zip(stay.answers, stay.drift, strict=True)]
    assert not stay.alerted, stay_detail
    assert len(stay.answers) == 8


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_no_collapsed_or_repetitive_output(results, adapter):
    answers = results["report"]["answers"][adapter]
    session_answers = [a for s in (results["switch"], results["stay"]) for a in s.answers if a.adapter == adapter]
    qualities = [a["quality"] for a in answers] + [a.quality for a in session_answers]
    texts = [a["answer"] for a in answers] + [a.text for a in session_answers]
    assert all(t.strip() for t in texts)
    assert not [t for t, q in zip(texts, qualities, strict=True) if q["collapsed"]]
    assert max(q["max_ngram_repeat"] for q in qualities) <= 3
    assert sum(q["distinct2"] for q in qualities) / len(qualities) >= 0.85
    assert len(set(texts)) >= 0.9 * len(texts)  # not one canned reply for every question
    summary = results["report"]["adapters"][adapter]
    assert summary["finished_by_length"] <= N_SINGLE // 2  # it learned to stop (EOS)
