"""The rated adapter answers (data/rated/) are evaluation sets: well-formed, blind-graded by two raters on the
rubric's scale, covering the base model and every shipped adapter, and never part of the scorer's training rows.
The held-out set answers the e2e checks' questions; the validation set answers questions written apart from them."""

from __future__ import annotations

from collections import Counter

import pytest

from app.config import Settings
from app.evaluation.report import load_prompts
from app.evaluation.report_run import user_text
from app.scoring.labels import LABELS
from app.scoring.train import load_corpus
from bench.rated_answers import DIMS, RATED, SETS, load


def _questions(path) -> set[str]:
    return {user_text(prompt) for prompt in load_prompts(path)}


@pytest.mark.parametrize("name", list(SETS))
def test_every_answer_is_graded_by_both_raters_on_the_rubric_scale(name):
    rows = load(name)
    assert [r["id"] for r in rows] == list(range(len(rows))) and len(rows) == 160
    assert Counter(r["adapter"] for r in rows) == dict.fromkeys(
        ["base", "support-friendly", "support-formal", "support-robotic"], 40
    )
    for r in rows:
        assert r["text"].strip() and r["prompt"].strip()
        assert set(r["raters"]) == {"a", "b"}
        for grade in r["raters"].values():
            assert grade["label"] in LABELS
            assert all(0 <= grade[d] <= 1 and abs(grade[d] * 20 - round(grade[d] * 20)) < 1e-9 for d in DIMS)


def test_the_rated_answers_stay_out_of_the_scorers_training_rows():
    corpus = {r["text"] for r in load_corpus(Settings().data_dir / "style", v3=True)}
    for name in SETS:
        assert not {r["text"] for r in load(name)} & corpus
    heldout = _questions(Settings().data_dir / "support" / "heldout_questions.jsonl")
    validation = _questions(RATED / "validation_questions.jsonl")
    assert {r["prompt"] for r in load("heldout")} <= heldout  # the e2e checks' questions: evaluation only
    assert {r["prompt"] for r in load("validation")} <= validation and not validation & heldout
