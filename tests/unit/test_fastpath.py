"""The decode fast path (app/engine/fastpath.py): bitwise the logits and cache of the model's own forward, on the real
model with left padding, with a LoRA adapter active (modules_to_save included) and on a reordered head; anything
it does not reproduce exactly is refused."""

import copy

import pytest
import torch
from peft import PeftModel

from app.engine import fastpath, head
from app.engine.kv import GrowingCache
from tests.support.adapter_factory import make_adapter, tiny_llama


def _both(model, prompt_rows, steps=4, pad=3):
    """Decode `steps` tokens with the model's forward and with the fast path from identical caches; both logits."""
    rows = len(prompt_rows)
    width = max(len(p) for p in prompt_rows) + pad
    ids = torch.zeros(rows, width, dtype=torch.long)
    mask = torch.zeros(rows, width, dtype=torch.long)
    for i, p in enumerate(prompt_rows):  # left-padded, as the engine lays out a batch
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    caches = [GrowingCache(rows), GrowingCache(rows)]
    with torch.no_grad():
        for cache in caches:
            model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
        last = positions[:, -1:]
        ours, theirs = [], []
        for step in range(steps):
            mask = torch.cat([mask, torch.ones(rows, 1, dtype=torch.long)], 1)
            last = last + 1
            token = torch.full((rows, 1), 11 + 7 * step)
            out = model(
                input_ids=token,
                attention_mask=mask,
                position_ids=last,
                cache=caches[0],
                use_cache=True,
                logits_to_keep=1,
            )
            theirs.append(out.logits[:, -1, :])
            ours.append(fastpath.decode_step(model, token, mask, last, caches[1]))
    for a, b in zip(caches[0].layers, caches[1].layers, strict=True):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    return ours, theirs


def test_bundled_model_bitwise_with_padding(bundled):
    model, tokenizer, _ = bundled
    assert fastpath.supports(model)
    prompts = [tokenizer(t)["input_ids"] for t in ("Where is my parcel?", "Hello", "I want a refund for order 1182")]
    ours, theirs = _both(model, prompts)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    ours, theirs = _both(model, prompts[:1], pad=0)  # one row, no padding (the model drops the mask)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_lora_adapter_and_reordered_head_bitwise(tmp_path):
    base = tiny_llama()
    make_adapter(tmp_path / "a", base, kind="lora", seed=7, targets=("q_proj", "v_proj", "down_proj"))
    make_adapter(tmp_path / "b", base, kind="dora", seed=8, modules_to_save=["lm_head"])
    model = PeftModel.from_pretrained(
        head.apply(copy.deepcopy(base), "cpu", measure=False), tmp_path / "a", adapter_name="a"
    )
    model.load_adapter(tmp_path / "b", adapter_name="b")
    model.eval()
    assert fastpath.supports(model)
    prompts = [[1, 20, 33, 90, 4], [1, 77, 88], [5, 6, 7, 8, 9, 10, 11]]
    with_a = _both(model, prompts)
    model.set_adapter("b")
    with_b = _both(model, prompts)
    for ours, theirs in (with_a, with_b):
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert not torch.equal(with_a[0][0], with_b[0][0])  # the adapters really differ


@pytest.mark.parametrize("case", ["eager", "bf16", "subclass"])
def test_refuses_what_it_does_not_reproduce(case):
    if case == "eager":
        model = tiny_llama(attn_implementation="eager")
    elif case == "bf16":
        model = tiny_llama().to(torch.bfloat16)
    else:
        model = tiny_llama()
        model.__class__ = type("MyLlama", (type(model),), {})
    assert fastpath.supports(tiny_llama())
    assert not fastpath.supports(model)
