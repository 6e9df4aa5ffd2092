"""The graded bot answers v3's heads are fitted on (data/style/v3/bot_answers) stay apart from the rated sets the
scorer is checked on: other questions, every row graded by the rubric."""

from __future__ import annotations

import json
import re
from pathlib import Path

from app.config import Settings
from app.evaluation.report import load_prompts
from app.evaluation.report_run import user_text
from app.scoring.labels import DIMENSIONS, LABELS
from bench.rated_answers import RATED

DATA = Settings().data_dir
FOLDER = DATA / "style" / "v3" / "bot_answers"
MODELS = {"base", "support-friendly", "support-formal", "support-robotic"}


def _questions(path: Path) -> list[str]:
    return [user_text(prompt) for prompt in load_prompts(path)]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_every_row_is_graded_and_answers_one_of_the_questions():
    questions = set(_questions(FOLDER / "questions.jsonl"))
    rows = [json.loads(line) for line in (FOLDER / "bot_answer.jsonl").read_text().splitlines()]
    # four models per question, less the one answer dropped because a rated set has the same text (a collapse)
    assert len(rows) == 4 * len(questions) - 1
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["register"] == "bot_answer" and r["voice"] in MODELS and r["prompt"] in questions
        assert r["label"] in LABELS and r["label"] in {g["label"] for g in r["raters"].values()}
        for d in DIMENSIONS:
            assert 0 <= r[d] <= 1
            assert abs(r[d] - sum(g[d] for g in r["raters"].values()) / len(r["raters"])) < 1e-3


def test_no_question_is_near_one_of_the_rated_sets():
    rated = _questions(DATA / "support" / "heldout_questions.jsonl")
    rated += _questions(RATED / "validation_questions.jsonl")
    for q in _questions(FOLDER / "questions.jsonl"):
        overlap = max(len(_words(q) & _words(o)) / len(_words(q) | _words(o)) for o in rated)
        assert overlap < 0.4, q
