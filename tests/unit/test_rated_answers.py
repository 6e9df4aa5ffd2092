"""The rated adapter answers (data/rated/) are an evaluation set: well-formed, blind-graded by two raters on the
rubric's scale, covering the base model and every shipped adapter, and never part of the scorer's training rows
(they answer the e2e checks' held-out questions)."""

from __future__ import annotations

import json
from collections import Counter

from app.config import Settings
from app.scoring.labels import LABELS
from app.scoring.train import load_corpus
from bench.rated_answers import DATA, DIMS, load


def test_every_answer_is_graded_by_both_raters_on_the_rubric_scale():
    rows = load()
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
    rated = {r["text"] for r in load()}
    corpus = {r["text"] for r in load_corpus(Settings().data_dir / "style", v3=True)}
    assert not rated & corpus
    assert DATA.parent.name == "rated" and DATA.parent != Settings().data_dir / "style"
    prompts = {
        json.loads(line)["messages"][-1]["content"]
        for line in (DATA.parents[1] / "support" / "heldout_questions.jsonl").read_text().splitlines()
        if line.strip()
    }
    assert {r["prompt"] for r in load()} <= prompts  # the e2e checks' held-out questions: evaluation only
