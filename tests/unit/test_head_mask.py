"""Head-targeted sparse LoRA: the selection follows the ΔW energy, and masked heads never move during training."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model

from app.engine.profile import profile_adapter
from app.training.head_mask import HeadSelection, apply_head_mask, masked_leak, select_heads
from tests.support.adapter_factory import tiny_llama

HEAD_DIM = 16  # tiny_llama: hidden 64, 4 heads, 2 KV heads


def _lora(layers=None):
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        layers_to_transform=layers,
    )
    torch.manual_seed(0)
    return get_peft_model(tiny_llama(), config)


def test_select_heads_picks_the_loud_layer_and_heads():
    model = _lora()
    with torch.no_grad():
        for name, module in model.get_base_model().named_modules():
            if hasattr(module, "lora_B") and "default" in module.lora_B:
                module.lora_B["default"].weight.fill_(0.01)
                if ".1." in name and name.endswith("q_proj"):  # layer 1, query head 2 dominates
                    module.lora_B["default"].weight[2 * HEAD_DIM : 3 * HEAD_DIM] = 1.0
                if ".1." in name and name.endswith("v_proj"):  # layer 1, kv head 0 dominates
                    module.lora_B["default"].weight[:HEAD_DIM] = 1.0
    selection = select_heads(profile_adapter(model, "default"), n_layers=1, q_per_layer=1, kv_per_layer=1)
    assert selection.layers == [1]
    assert selection.q_heads == {1: [2]}
    assert selection.kv_heads == {1: [0]}
    assert HeadSelection.from_dict(selection.to_dict()) == selection


def test_masked_heads_stay_zero_through_training():
    selection = HeadSelection(q_heads={0: [1], 1: [0, 3]}, kv_heads={0: [1], 1: [0]})
    model = _lora()
    counts = apply_head_mask(model, selection, HEAD_DIM)
    assert 0 < counts["trainable"] < counts["allocated"]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    ids = torch.randint(0, 512, (2, 12))
    for _ in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert masked_leak(model, selection, HEAD_DIM) == 0.0
    profile = profile_adapter(model, "default")
    for entry in profile["modules"]:
        leaf, layer = entry["module"].rsplit(".", 1)[-1], entry["layer"]
        heads = selection.q_heads[layer] if leaf in ("q_proj", "o_proj") else selection.kv_heads[layer]
        norms = entry["head_norms"]
        assert all(norms[h] == 0.0 for h in range(len(norms)) if h not in heads), entry["module"]
        assert any(norms[h] > 0.0 for h in heads), entry["module"]  # the chosen heads did train


def test_layer_without_selection_is_refused():
    model = _lora()
    try:
        apply_head_mask(model, HeadSelection(q_heads={0: [0]}, kv_heads={0: [0]}), HEAD_DIM)
    except ValueError as exc:
        assert "layer 1" in str(exc)
    else:
        raise AssertionError("expected ValueError")
