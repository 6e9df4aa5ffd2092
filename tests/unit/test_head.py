"""The reordered output head (app/engine/head.py): same logits as the plain head, still the tied weight, never stale,
and PEFT's copies of it (modules_to_save) are plain linears that train and load like any other."""

import copy

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn

from app.engine import head, quantize
from tests.support.adapter_factory import make_adapter, tiny_llama


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_reordered_head_keeps_logits_and_the_tied_weight():
    plain = tiny_llama(tie_word_embeddings=True)
    model = head.apply(copy.deepcopy(plain), "cpu", measure=False)
    assert type(model.lm_head) is head.ReorderedHead and isinstance(model.lm_head, nn.Linear)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    for rows in (1, 3, 4, 9):
        ids = torch.randint(0, 512, (rows, 7))
        torch.testing.assert_close(_logits(model, ids), _logits(plain, ids), rtol=1e-4, atol=1e-4)


def test_a_changed_weight_is_never_read_from_the_stale_copy():
    model = head.apply(tiny_llama(), "cpu", measure=False)
    x = torch.randn(4, 64)
    with torch.no_grad():
        model.lm_head.weight.mul_(-2.0)  # in place: same tensor, new version
        torch.testing.assert_close(model.lm_head(x), F.linear(x, model.lm_head.weight))
        model.lm_head.weight = nn.Parameter(torch.randn(512, 64))  # replaced
        torch.testing.assert_close(model.lm_head(x), F.linear(x, model.lm_head.weight))


def test_copies_are_plain_linears():
    model = head.apply(tiny_llama(), "cpu", measure=False)
    twin = copy.deepcopy(model.lm_head)
    assert type(twin) is nn.Linear and torch.equal(twin.weight, model.lm_head.weight)
    assert twin.weight is not model.lm_head.weight


@pytest.mark.parametrize("case", ["gpu", "half", "packed", "off"])
def test_left_alone_where_it_does_not_apply(case):
    model = tiny_llama()
    device, enabled = ("cuda", True) if case == "gpu" else ("cpu", case != "off")
    if case == "half":
        model = model.half()
    if case == "packed":
        quantize.quantize(model, "fp16")
    before = type(model.lm_head)
    assert type(head.apply(model, device, enabled).lm_head) is before


def test_modules_to_save_adapter_on_a_reordered_head(tmp_path):
    base = tiny_llama()
    make_adapter(tmp_path / "a", base, kind="lora", seed=5, modules_to_save=["lm_head"])
    ids = torch.randint(0, 512, (2, 6))
    expected = _logits(PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "a").eval(), ids)
    model = PeftModel.from_pretrained(head.apply(copy.deepcopy(base), "cpu", measure=False), tmp_path / "a").eval()
    torch.testing.assert_close(_logits(model, ids), expected, rtol=1e-4, atol=1e-4)
    with model.disable_adapter():
        torch.testing.assert_close(_logits(model, ids), _logits(base, ids), rtol=1e-4, atol=1e-4)


def test_bundled_model_logits_and_greedy_choices_are_unchanged(bundled):
    """On the real head: oneDNN's logits are MKL's within fp32 rounding, so every greedy choice that rounding cannot
    flip is the same. (Whole generated texts are not compared: a near-tie a few steps in may flip on one CPU's
    kernels and not another's, which says nothing about the head.)"""
    model, tokenizer, _ = bundled
    source = model.get_output_embeddings()
    reordered = head.ReorderedHead(source, min_rows=1)  # oneDNN at every row count
    texts = ["Our refund policy allows returns within", "Thanks for waiting, your order", "Hi!", "The invoice shows"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = model.model(**batch).last_hidden_state
        want, got = source(hidden), reordered(hidden)
    # fp32 dot products of length in_features reordered by the kernel: error grows like sqrt(K) ulps of the sums
    atol = 64 * torch.finfo(torch.float32).eps * source.in_features**0.5 * float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=atol)
    top2 = want.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 2 * atol
    assert float(clear.float().mean()) > 0.9
    assert torch.equal(got.argmax(-1)[clear], want.argmax(-1)[clear])


def test_min_rows_from_timings():
    # (MKL, oneDNN) seconds per row count
    assert head.min_rows_from({2: (1.0, 1.0), 4: (2.0, 1.0), 8: (3.0, 1.0)}) == 4
    assert head.min_rows_from({2: (1.0, 2.0), 4: (1.0, 1.0)}) is None
    assert head.min_rows_from({2: (2.0, 1.0), 4: (1.0, 1.0), 8: (2.0, 1.0)}) == 8  # must win at every larger count
    assert head.min_rows_from({2: (2.0, 1.0), 4: (2.0, 1.0)}) == 2


def test_measured_apply_reports_its_choice_and_keeps_logits():
    plain = tiny_llama()
    choices: dict[str, str] = {}
    model = head.apply(copy.deepcopy(plain), "cpu", choices=choices)
    assert choices["output_head"].startswith(("oneDNN-reordered from", "plain (oneDNN not faster"))
    reordered = type(model.lm_head) is head.ReorderedHead
    assert reordered == choices["output_head"].startswith("oneDNN")
    ids = torch.randint(0, 512, (5, 7))
    torch.testing.assert_close(_logits(model, ids), _logits(plain, ids), rtol=1e-4, atol=1e-4)
    assert head.apply(tiny_llama(), "cpu", enabled=False, choices=choices) is not None
    assert choices["output_head"].startswith("plain (TONEWATCH_REORDER_HEAD=false)")
