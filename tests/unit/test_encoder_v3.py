"""Scorer v3's style encoder (app/scoring/encoder_v3.py): triplets take positives from other content and negatives
from the same content, surface rewrites pair by direction, training moves a tiny random BERT (MiniLM's tokenizer)
toward the triplets, and merging the LoRA into a SentenceTransformer gives the trained model's embeddings."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from app.scoring import encoder_v3 as ev
from app.scoring.corpus_v3 import load_texts


def _groups():
    def v(group, key, text, f, p, w, label):
        return ev.Version(group, key, text, (f, p, w), label)

    return {
        "a": [
            v("a", "base", "Your parcel has shipped and arrives Monday.", 0.6, 0.5, 0.3, "formal"),
            v("a", "casing", "your parcel has shipped and arrives monday", 0.45, 0.5, 0.3, "casual"),
            v("a", "contraction", "Your parcel's shipped and arrives Monday.", 0.55, 0.5, 0.3, "formal"),
            v("a", "warmth_up", "Great news, your parcel is on its way and arrives Monday!", 0.5, 0.6, 0.8, "friendly"),
        ],
        "b": [
            v("b", "base", "The meeting has moved to Thursday at noon.", 0.6, 0.5, 0.3, "formal"),
            v("b", "casing", "the meeting has moved to thursday at noon", 0.45, 0.5, 0.3, "casual"),
            v("b", "contraction", "The meeting's moved to Thursday at noon.", 0.55, 0.5, 0.3, "formal"),
            v(
                "b",
                "warmth_up",
                "Good news, we moved the meeting to Thursday, hope that helps!",
                0.5,
                0.65,
                0.75,
                "friendly",
            ),
        ],
    }


def test_triplets_take_style_from_elsewhere_and_content_from_home():
    groups = _groups()
    home = {v.text: g for g, vs in groups.items() for v in vs}
    data = ev.triplets(groups, near=0.15, far=0.35, seed=1)
    assert data
    for anchor, positive, negative in data:
        assert home[positive] != home[anchor] and home[negative] == home[anchor]
    # the lower-cased rewrite is paired with the other group's lower-cased one, against its own base
    assert (
        "your parcel has shipped and arrives monday",
        "the meeting has moved to thursday at noon",
        "Your parcel has shipped and arrives Monday.",
    ) in data


def test_surface_direction():
    assert ev.surface_direction("casing", "all lower here", "All lower here") == "lower"
    assert ev.surface_direction("contraction", "It's fine, we're done", "It is fine, we are done") == "contract"
    assert ev.surface_direction("contraction", "It is fine", "It's fine") == "expand"
    assert ev.surface_direction("contraction", "Same", "Same") is None


def test_the_shipped_corpus_gives_triplets_of_every_kind():
    groups = ev.groups_from_v3(load_texts())
    data = ev.triplets(groups, seed=13)
    assert len(data) > 3000
    bases = {v.text for g in groups.values() for v in g if v.key == "base"}
    lower = [t for t in data if t[0] == t[0].lower() and t[1] == t[1].lower() and t[2] in bases]
    assert len(lower) > 100  # casing triplets


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from app.engine.provision import embedding_model_dir

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(embedding_model_dir())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _embedder(folder):
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(str(folder), max_seq_length=64)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), "mean")
    return SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")


def test_training_moves_the_encoder_toward_the_triplets_and_merges(tiny_bert, tmp_path):
    groups = _groups()
    data = ev.triplets(groups, near=0.15, far=0.35, seed=1) * 4
    graded = [(v.text, v.grades) for g in groups.values() for v in g]
    before = _embedder(tiny_bert)
    acc_before = ev.triplet_accuracy(lambda t: before.encode(t, normalize_embeddings=True), data)
    config = ev.EncoderConfig(rank=4, steps=40, batch_size=8, lr=3e-3, warmup_steps=4, max_len=32, seed=3)
    summary = ev.train_encoder(tiny_bert, data, graded, tmp_path / "lora", config)
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    assert summary["final_loss"] < summary["first_loss"] and summary["trainable_params"] > 0
    tuned = _embedder(tiny_bert)
    ev.merge_style_lora(tuned, tmp_path / "lora")
    acc_after = ev.triplet_accuracy(lambda t: tuned.encode(t, normalize_embeddings=True), data)
    assert acc_after > acc_before
    # merged in place: plain modules again, not a PEFT wrapper, and the embedding changed
    assert type(tuned[0].auto_model).__name__ == "BertModel"
    text = ["A sentence to embed."]
    assert not np.allclose(before.encode(text), tuned.encode(text))
    shutil.rmtree(tmp_path / "lora")


def test_command_line_trains_on_the_corpus_and_scores_a_held_out_register(tiny_bert, tmp_path, capsys):
    import json

    out = tmp_path / "enc"
    args = ["--out", str(out), "--base", str(tiny_bert), "--hold-out", "tutoring", "--steps", "2", "--batch-size", "4"]
    assert ev.main(args) == 0
    summary = json.loads((out / "encoder_training.json").read_text())
    held = summary["held_out"]
    assert held["registers"] == ["tutoring"] and held["triplets"] > 100
    assert 0 <= held["accuracy_base"] <= 1 and 0 <= held["accuracy_tuned"] <= 1
    assert summary["triplets"] > 3000  # the other eleven v3 registers and the v2 sets


def test_politeness_warmth_pairs_get_extra_triplets_and_edits_anchor_invariance():
    groups = _groups()
    plain = ev.triplets(groups, near=0.15, far=0.35, seed=1)
    weighted = ev.triplets(groups, near=0.15, far=0.35, seed=1, pw_extra=2)
    versions = {v.text: v for vs in groups.values() for v in vs}
    led = [t for t in plain if ev._politeness_warmth_led(versions[t[0]], versions[t[2]])]
    assert led and len(weighted) == len(plain) + 2 * len(led)
    edited = ev.triplets(groups, near=0.15, far=0.35, seed=1, invariance_share=1.0)
    invariance = [t for t in edited if t[0] not in versions]
    assert invariance  # every version with a far sibling anchors an edited copy of itself
    for anchor, positive, negative in invariance:
        own = versions[positive]
        assert anchor != positive and len(anchor) > len(positive)  # something tone-neutral was inserted
        assert versions[negative].group == own.group and negative != positive
