"""Scorer v3's plumbing: the version switch picks the artifact folder and its encoder LoRA, the v3 corpus joins the
heads' training rows, and the held-out comparison tells a style-carrying encoder from a topic-only one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.config import Settings
from app.scoring import evaluate
from app.scoring.embedder import encoder_lora
from app.scoring.labels import DIMENSIONS, LABELS
from app.scoring.model_card_v3 import verdict, write_card_v3
from app.scoring.train import fit_head, load_corpus


def test_the_version_picks_the_artifact_folder(tmp_path):
    assert Settings(home=tmp_path, scorer="v3").style_dir == tmp_path / "models" / "style-v3"
    assert Settings(home=tmp_path, scorer="v2").style_dir == tmp_path / "models" / "style"
    assert encoder_lora(Settings(scorer="v2").style_dir) is None  # v2 runs the plain MiniLM
    assert encoder_lora(Settings(scorer="v3").style_dir) == Settings(scorer="v3").style_dir / "encoder"
    (tmp_path / "encoder").mkdir()
    assert encoder_lora(tmp_path) is None  # a folder without an adapter is not an encoder
    (tmp_path / "encoder" / "adapter_config.json").write_text("{}")
    assert encoder_lora(tmp_path) == tmp_path / "encoder"


def test_the_v3_corpus_joins_as_sets_of_rewrites():
    base = load_corpus(Settings().data_dir / "style")
    rows = load_corpus(Settings().data_dir / "style", v3=True)
    v3 = [r for r in rows if r["corpus"] == "v3"]
    groups = [r for r in v3 if r["register"] != "bot_answer"]  # minimal-pair groups; bot answers: one set a question
    assert len(rows) == len(base) + len(v3) and len(groups) == 4500
    sets: dict[str, list[dict]] = {}
    for r in groups:
        sets.setdefault(r["set"], []).append(r)
    assert len(sets) == 450 and all(len(s) == 10 for s in sets.values())
    answers: dict[str, list[dict]] = {}
    for r in v3:
        if r["register"] == "bot_answer":
            answers.setdefault(r["set"], []).append(r)
    assert answers and all(len({r["voice"] for r in s}) == len(s) <= 4 for s in answers.values())
    assert {r["register"] for r in v3} >= {"sms", "tutoring", "application"}
    assert all(r["label"] in LABELS and 0 <= r["formality"] <= 1 for r in v3)
    assert len({r["id"] for r in rows if "id" in r}) == len([r for r in rows if "id" in r])  # ids stay unique


def _synthetic(seed=0):
    """Three registers of sets (four versions each); the 'tuned' embedding carries the grades, the 'frozen' one
    only the set's topic."""
    rng = np.random.default_rng(seed)
    rows, tuned, frozen = [], [], []
    mix = rng.normal(size=(3, 48))
    for register in ("r1", "r2", "r3"):
        for s in range(30):
            topic = rng.normal(size=48)
            for _ in range(4):
                grades = rng.uniform(0, 1, size=3)
                label = LABELS[int(grades[0] * 3.99)]
                words = " ".join(["word"] * int(rng.integers(3, 30)))
                rows.append(
                    {"set": f"{register}-{s}", "register": register, "corpus": "v3", "label": label, "text": words}
                    | dict(zip(DIMENSIONS, grades.tolist(), strict=True))
                )
                frozen.append(topic + 0.1 * rng.normal(size=48))
                tuned.append(topic * 0.2 + grades @ mix + 0.05 * rng.normal(size=48))
    features = rng.normal(size=(len(rows), 5))
    return rows, features, np.array(frozen, dtype=np.float32), np.array(tuned, dtype=np.float32)


def test_held_out_comparison_credits_the_encoder_that_carries_style():
    rows, features, frozen, tuned = _synthetic()
    out = evaluate.held_out_registers(rows, features, frozen, tuned, ["r1", "r3"], 13, fit_head)
    assert set(out["folds"]) == {"r1", "r3"} and out["registers"] == ["r1", "r3"]
    for dim in DIMENSIONS:
        assert out["mean"]["v3"][dim]["model"] > 0.6 > abs(out["mean"]["v2"][dim]["model"])
        assert out["v3_better"][dim]
    # swapped, the same comparison says no: it is not biased toward the second encoder
    swapped = evaluate.held_out_registers(rows, features, tuned, frozen, ["r1", "r3"], 13, fit_head)
    assert not any(swapped["v3_better"][d] for d in DIMENSIONS)


def test_the_card_states_where_v3_loses(tmp_path):
    rows, features, frozen, tuned = _synthetic(1)
    held = evaluate.held_out_registers(rows, features, tuned, frozen, ["r2"], 13, fit_head)  # v3 = the worse one
    fold = {
        d: {"model": 0.5, "model_min": 0.4, "length_only": 0.1, "lexicon": 0.2, "prediction_vs_length": 0.0}
        for d in DIMENSIONS
    }
    invariant = {"curly": {"max": 0.01, "mean": 0.005, "violations": 0, "n": 12}}
    directional = {"more_formal": {"passed": 12, "n": 12, "mean_delta": 0.2, "min_delta": 0.1}}
    metrics = {
        "encoder": {
            "triplets": 10,
            "graded": 5,
            "config": {"steps": 2},
            "first_loss": 1.0,
            "final_loss": 0.5,
            "held_out": {"registers": ["r2"], "triplets": 4, "accuracy_base": 0.5, "accuracy_tuned": 0.75},
        },
        "held_out": held,
        "cross_register": {"folds": {"r1": {}}, "mean": {**fold, "label_accuracy": 0.7}},
        "metamorphic": {"invariant": invariant, "directional": directional},
    }
    write_card_v3(tmp_path / "card.md", metrics, {"seed": 13})
    card = (tmp_path / "card.md").read_text()
    assert "v2 against v3 on registers the encoder never saw" in card and "0.500 → tuned **0.750**" in card
    assert "Where v3 is worse than v2: r2 formality (vs v2)" in card and "| **no** |" in card
    status = "the default scorer" if Settings.model_fields["scorer"].default == "v3" else "not the default"
    assert f"{status}.** Scorer checks **not passed**: it does not beat v2 on formality" in card
    good = {**metrics, "held_out": {**held, "v3_better": dict.fromkeys(held["v3_better"], True)}}
    assert verdict(good) == (True, "it beats v2 on every dimension and keeps every invariance")
    broken = {"order id": {"max": 0.06, "mean": 0.01, "violations": 1, "n": 12}}
    assert not verdict({**good, "metamorphic": {"invariant": broken, "directional": directional}})[0]


def test_the_projection_keeps_v2s_share_of_the_style_distance():
    """Each projection dimension is standardised, so a wider subspace would weigh more in the persona distance; its
    weight scales by sqrt(32 / width). The shipped v3 head (64 dimensions) carries the scaled weight."""
    import math

    from app.scoring.model import StyleHead
    from app.scoring.train import PROJ_DIMS, PROJ_WEIGHT

    rows, features, frozen, _ = _synthetic()
    for dims in (PROJ_DIMS // 4, PROJ_DIMS):
        head = fit_head(rows, features, frozen, np.arange(len(rows)), 13, proj_dims=dims)
        assert head.style_weights["proj"] == pytest.approx(PROJ_WEIGHT * math.sqrt(PROJ_DIMS / dims))
    v3 = StyleHead.load(Settings(scorer="v3").style_dir)
    scaled = PROJ_WEIGHT / math.sqrt(2) * v3.meta["proj_scale"]
    assert v3.proj.shape[1] == 64 and v3.style_weights["proj"] == pytest.approx(scaled)
    assert StyleHead.load(Settings(scorer="v2").style_dir).style_weights["proj"] == PROJ_WEIGHT


def test_the_persona_distance_weight_is_the_one_that_follows_graded_tone_best():
    """The projection's weight in the persona distance is chosen, not set: per leave-one-register-out fold, the
    Spearman between style-space distances and graded-tone distances of texts with different content, for each
    weight; v3 ships the best on the registers its encoder trained on (the held-out ones stay a check)."""
    from app.scoring.model import StyleHead

    rows, features, _, tuned = _synthetic()
    train = np.array([i for i, r in enumerate(rows) if r["register"] != "r1"])
    test = np.array([i for i, r in enumerate(rows) if r["register"] == "r1"])
    head = fit_head(rows, features, tuned, train, 13, proj_dims=16)
    agreement = evaluate.distance_agreement(head, rows, features, tuned, test)
    assert len(agreement["across_sets"]) == len(agreement["within_sets"]) == len(evaluate.PROJ_SCALES)
    assert max(agreement["across_sets"]) > 0.9  # the embedding carries the grades here: distances follow them
    best = evaluate.chosen_proj_scale(agreement)
    assert agreement["across_sets"][evaluate.PROJ_SCALES.index(best)] == max(agreement["across_sets"])
    # proj_scale changes the persona distance and nothing the heads predict
    scaled = fit_head(rows, features, tuned, train, 13, proj_dims=16, proj_scale=0.5)
    assert scaled.style_weights["proj"] == pytest.approx(head.style_weights["proj"] * 0.5)
    assert np.array_equal(scaled.dim_w, head.dim_w) and np.array_equal(scaled.lab_w, head.lab_w)
    # the shipped v3 head carries the weight its own training run chose
    style_dir = Settings(scorer="v3").style_dir
    metrics = json.loads((style_dir / "metrics.json").read_text())
    chosen = metrics["cross_register"]["distance_agreement"]["chosen_on"]
    assert StyleHead.load(style_dir).meta["proj_scale"] == evaluate.chosen_proj_scale(chosen)


def test_v3_must_also_beat_v2_as_shipped():
    """A head recipe that suits v3 but hurts v2 must not flatter the comparison: v2 with its own recipe is a third
    arm, and losing to it keeps v3 from being the default."""
    from functools import partial

    rows, features, frozen, tuned = _synthetic()
    # a third arm with a recipe of its own on the frozen encoder
    out = evaluate.held_out_registers(
        rows, features, frozen, tuned, ["r1", "r3"], 13, fit_head, v2_shipped_fit=partial(fit_head, proj_dims=8)
    )
    assert set(out["folds"]["r1"]) == {"v2", "v3", "v2_shipped"}
    assert all(out["v3_better"].values())
    shipped = {k: not v for k, v in out["v3_better"].items()}  # as if v2 as shipped won everywhere
    held = {**out, "v3_better_than_shipped": shipped}
    invariant = {"curly": {"max": 0.01, "mean": 0.005, "violations": 0, "n": 12}}
    ok, why = verdict({"held_out": held, "metamorphic": {"invariant": invariant}})
    assert not ok and "formality (v2 as shipped)" in why
    ok, _ = verdict({"held_out": out, "metamorphic": {"invariant": invariant}})
    assert ok == all(out["v3_better_than_shipped"].values())


async def test_the_shipped_v3_scorer_loads_merged_and_scores():
    """TONEWATCH_SCORER=v3 serves the shipped artifact: heads from models/style-v3, MiniLM with the style LoRA merged
    (plain BERT modules again, so a text costs what v2's does), grades that order a formal and a slangy text."""
    from app.metrics import Metrics
    from app.scoring.scorer import ToneScorer

    settings = Settings(scorer="v3")
    scorer = ToneScorer.load(Metrics(), settings.style_dir, settings.persona_dir)
    try:
        assert scorer.embedder.style_lora == settings.style_dir / "encoder"
        assert type(scorer.embedder.model[0].auto_model).__name__ == "BertModel"
        assert scorer.head.meta["scorer"] == "v3" and scorer.head.meta["proj_dims"] == 64
        formal, slangy = await scorer.score(
            ["We regret to inform you that your application has not been successful.", "lol nah cant make it m8"],
            persona="support-friendly",
        )
        assert formal["formality"] > slangy["formality"] + 0.2
        assert {"label", "persona_distance", "persona_match"} <= set(formal)
    finally:
        scorer.close()


def test_registers_the_encoder_never_saw_are_held_out():
    from app.scoring.train import V3_REGISTERS_AFTER_ENCODER, unseen_registers

    registers = {"sms", "chat", "complaint", *V3_REGISTERS_AFTER_ENCODER}
    # an encoder that lists only what it held out (trained before support_chat was written)
    old = {"held_out": {"registers": ["sms", "tutoring"]}}
    assert unseen_registers(old, registers) == sorted({"sms", *V3_REGISTERS_AFTER_ENCODER})
    # one that lists what it trained on: everything else is unseen, and a register it trained on is not
    new = {"held_out": {"registers": ["sms"]}, "trained_registers": ["chat", *V3_REGISTERS_AFTER_ENCODER]}
    assert unseen_registers(new, registers) == ["complaint", "sms"]
    # the shipped encoder never saw support_chat: the v3 card's held-out comparison includes it
    metrics = json.loads((Settings(scorer="v3").style_dir / "metrics.json").read_text())
    assert set(V3_REGISTERS_AFTER_ENCODER) <= set(metrics["held_out"]["registers"])
