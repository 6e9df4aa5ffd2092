"""The training augmentation (app/scoring/augment.py): its edits only insert, keep the writer's register, and stay
apart from the metamorphic suite that checks what they teach."""

from __future__ import annotations

import random
import re

from app.scoring import augment
from app.scoring import metamorphic as mm

CASUAL = "hey it's fine, don't stress about it. see you at the thing later."
PLAIN = "We have received your request. It will be processed within five working days."


def _inserted(original: str, edited: str) -> str:
    """The one contiguous run the edit added (the edit only inserts; spaces around a sentence are re-joined)."""
    i = 0
    while i < len(original) and original[i] == edited[i]:
        i += 1
    j = 0
    while j < len(original) - i and original[-1 - j] == edited[-1 - j]:
        j += 1
    assert edited[:i] + edited[len(edited) - j :] == original
    return edited[i : len(edited) - j]


def test_id_edits_only_insert_and_use_both_bare_ids_and_clauses():
    rng = random.Random(3)
    added = [_inserted(PLAIN, augment.with_id(PLAIN, rng)) for _ in range(200)]
    assert all(re.search(r"\d", a) for a in added)
    assert any(a.startswith(",") for a in added)  # a clause
    assert any(not a.startswith(",") for a in added)  # a bare id


def _template_of(phrase: str) -> str:
    """The template an inserted id phrase was made from."""
    for template in augment.ID_PHRASES + augment.ID_CLAUSES_CASUAL + augment.ID_CLAUSES_PLAIN:
        pattern = re.escape(template).replace(r"\{n\}", r"\d+").replace(r"\{m\}", r"\d+").replace(r"\{a\}", "[A-Z]+")
        if re.fullmatch(pattern, phrase):
            return template
    raise AssertionError(phrase)


def test_clauses_follow_the_writers_register():
    rng = random.Random(5)
    casual = {_template_of(_inserted(CASUAL, augment.with_id(CASUAL, rng))) for _ in range(300)}
    plain = {_template_of(_inserted(PLAIN, augment.with_id(PLAIN, rng))) for _ in range(300)}
    assert casual & set(augment.ID_CLAUSES_CASUAL) and not casual & set(augment.ID_CLAUSES_PLAIN)
    assert plain & set(augment.ID_CLAUSES_PLAIN) and not plain & set(augment.ID_CLAUSES_CASUAL)


def test_neutral_sentence_is_lowercased_for_a_lowercase_writer():
    rng = random.Random(1)
    for _ in range(20):
        added = _inserted(CASUAL, augment.with_neutral(CASUAL, rng)).strip()
        assert added[:1].islower()


def test_augmentation_phrases_are_not_the_metamorphic_suites():
    suite = " ".join(b.neutral + " " + b.with_id for b in mm.BASES).lower()
    for sentence in augment.NEUTRAL:
        assert sentence.lower().rstrip(".") not in suite
    for template in augment.ID_PHRASES + augment.ID_CLAUSES_CASUAL + augment.ID_CLAUSES_PLAIN:
        words = [w for w in re.split(r"\{[a-z]\}|[^a-z' ]+", template.lower()) if len(w.strip().split()) >= 3]
        for w in words:  # every run of three or more fixed words
            assert w.strip() not in suite, template


def test_augment_marks_rows_and_keeps_their_grades():
    rows = [{"id": f"r{i}", "set": "s", "text": PLAIN, "formality": 0.9} for i in range(50)]
    out = augment.augment(rows, 0.5, seed=2)
    assert 10 < len(out) < 40
    assert all(r["augmented"] and r["formality"] == 0.9 and r["id"].endswith("~aug") for r in out)
    assert all(r["text"] != PLAIN for r in out)
