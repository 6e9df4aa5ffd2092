"""Metamorphic tests of both shipped scorers (v2: models/style on the plain MiniLM; v3: models/style-v3 on MiniLM
with its style LoRA merged) with the real MiniLM: edits that change no tone move no dimension by more than 0.05;
edits that change tone move the right dimension up. Cases live in app/scoring/metamorphic.py (train-style reports the
same numbers in the model card)."""

import numpy as np
import pytest

from app.config import Settings
from app.scoring import metamorphic as mm
from app.scoring.embedder import Embedder, encoder_lora
from app.scoring.evaluate import predict_texts
from app.scoring.labels import DIMENSIONS
from app.scoring.model import StyleHead
from app.scoring.normalize import normalize


@pytest.fixture(scope="module", params=["v2", "v3"])
def predict(request):
    style_dir = Settings(scorer=request.param).style_dir
    head, embedder = StyleHead.load(style_dir), Embedder(style_lora=encoder_lora(style_dir))
    return lambda texts: predict_texts(head, embedder, texts)


@pytest.mark.parametrize("edit", list(mm.INVARIANT_EDITS))
def test_tone_preserving_edit_moves_no_dimension(predict, edit):
    assert len(mm.BASES) >= 10
    base = predict([b.text for b in mm.BASES])
    edited_texts = [mm.INVARIANT_EDITS[edit](b) for b in mm.BASES]
    assert sum(e != b.text for e, b in zip(edited_texts, mm.BASES, strict=True)) >= 10  # it really edits 10+ texts
    moved = np.abs(predict(edited_texts) - base)
    worst = int(np.argmax(moved.max(1)))
    assert moved.max() <= mm.INVARIANCE_TOLERANCE, (
        f"{edit}: {DIMENSIONS[int(np.argmax(moved[worst]))]} moved {moved.max():.3f} on {mm.BASES[worst].text!r}"
    )


@pytest.mark.parametrize("edit", list(mm.DIRECTIONAL))
def test_tone_changing_edit_moves_its_dimension_up(predict, edit):
    dim, pairs = mm.DIRECTIONAL[edit]
    assert len(pairs) >= 10
    j = DIMENSIONS.index(dim)
    delta = predict([b for _, b in pairs])[:, j] - predict([a for a, _ in pairs])[:, j]
    failed = [(pairs[i][0], round(float(delta[i]), 3)) for i in np.where(delta < mm.DIRECTIONAL_MIN)[0]]
    assert not failed, f"{edit}: {dim} did not rise by {mm.DIRECTIONAL_MIN} for {failed}"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("I don\u2019t know\u2026 it\u2019s \u201cfine\u201d \u2014 really.", "I don't know... it's \"fine\" - really"),
        ("I do n't know , it 's fine .", "I don't know, it's fine"),
        ("Refund of $12.50 for order #48213 issued!", "Refund of <amount> for order <id> issued!"),
        ("miss u\U0001f495see you at 3:45pm", "miss u \U0001f495 see you at <num>"),
        ("  two   spaces\n\n\nand lines ", "two spaces\nand lines"),
        ("Wait... what?", "Wait... what?"),
    ],
)
def test_normalisation(raw, canonical):
    assert normalize(raw) == canonical
    assert normalize(canonical) == canonical
