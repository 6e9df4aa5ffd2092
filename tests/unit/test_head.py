"""The reordered output head (app/engine/head.py): same logits as the plain head, still the tied weight, never stale,
and PEFT's copies of it (modules_to_save) are plain linears that train and load like any other."""

import copy

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn

from app.engine import head, quantize
from tests.unit.adapter_factory import make_adapter, tiny_llama


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_reordered_head_keeps_logits_and_the_tied_weight():
    plain = tiny_llama(tie_word_embeddings=True)
    model = head.apply(copy.deepcopy(plain), "cpu")
    assert type(model.lm_head) is head.ReorderedHead and isinstance(model.lm_head, nn.Linear)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    for rows in (1, 3, 4, 9):
        ids = torch.randint(0, 512, (rows, 7))
        torch.testing.assert_close(_logits(model, ids), _logits(plain, ids), rtol=1e-4, atol=1e-4)


def test_a_changed_weight_is_never_read_from_the_stale_copy():
    model = head.apply(tiny_llama(), "cpu")
    x = torch.randn(4, 64)
    with torch.no_grad():
        model.lm_head.weight.mul_(-2.0)  # in place: same tensor, new version
        torch.testing.assert_close(model.lm_head(x), F.linear(x, model.lm_head.weight))
        model.lm_head.weight = nn.Parameter(torch.randn(512, 64))  # replaced
        torch.testing.assert_close(model.lm_head(x), F.linear(x, model.lm_head.weight))


def test_copies_are_plain_linears():
    model = head.apply(tiny_llama(), "cpu")
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
    model = PeftModel.from_pretrained(head.apply(copy.deepcopy(base), "cpu"), tmp_path / "a").eval()
    torch.testing.assert_close(_logits(model, ids), expected, rtol=1e-4, atol=1e-4)
    with model.disable_adapter():
        torch.testing.assert_close(_logits(model, ids), _logits(base, ids), rtol=1e-4, atol=1e-4)


def test_bundled_model_greedy_output_is_unchanged(bundled):
    model, tokenizer, _ = bundled
    reordered = copy.copy(model)  # a shallow twin: same weights, its own head
    reordered.__dict__["_modules"] = dict(model._modules)
    reordered.set_output_embeddings(head.ReorderedHead(model.get_output_embeddings()))
    ids = tokenizer("Our refund policy allows returns within", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=24, do_sample=False)
        got = reordered.generate(ids, max_new_tokens=24, do_sample=False)
    assert torch.equal(got, want)
