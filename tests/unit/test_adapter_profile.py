"""profile_adapter: ΔW statistics checked against merge_and_unload and a hand-built rank-1 update."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from app.engine.profile import layer_index, profile_adapter
from tests.support.adapter_factory import KINDS, build_peft_model, tiny_llama

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")


@pytest.fixture(scope="module")
def base():
    return tiny_llama()


def merged_deltas(model) -> dict[str, torch.Tensor]:
    """W_merged - W_base for every weight, via PEFT's own merge on a copy."""
    merged = copy.deepcopy(model).merge_and_unload()
    base = model.get_base_model()
    out = {}
    for name, p in merged.named_parameters():
        if name.endswith(".weight"):
            module = name[: -len(".weight")]
            original = base.get_submodule(module)
            original = original.get_base_layer() if hasattr(original, "get_base_layer") else original
            out[module] = (p - original.weight).detach().float()
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_matches_merged_weight_difference(base, kind):
    extra = {"feedforward_modules": ["down_proj"]} if kind == "ia3" else {}
    model = build_peft_model(base, kind, targets=(*ATTN, "down_proj"), **extra)
    prof = profile_adapter(model, "default")
    deltas = merged_deltas(model)
    assert prof["totals"]["modules"] == len(prof["modules"]) == 10  # 5 projections x 2 layers
    for entry in prof["modules"]:
        delta = deltas[entry["module"]]
        assert entry["shape"] == list(delta.shape)
        assert entry["frobenius_norm"] == pytest.approx(float(torch.linalg.norm(delta)), rel=1e-4)
        expected_sv = torch.linalg.svdvals(delta)[:16]
        assert len(entry["singular_values"]) == 16
        assert torch.allclose(torch.tensor(entry["singular_values"]), expected_sv, atol=1e-4 * float(expected_sv[0]))
        assert 1.0 <= entry["effective_rank"] <= min(delta.shape)
        assert 0.0 < entry["energy_top_k"] <= 1.0 + 1e-9
        leaf = entry["module"].rsplit(".", 1)[-1]
        if leaf in ATTN:
            heads = entry["head_norms"]
            assert len(heads) == (2 if leaf in ("k_proj", "v_proj") else 4)
            assert sum(h * h for h in heads) == pytest.approx(entry["frobenius_norm"] ** 2, rel=1e-4)
        else:
            assert "head_norms" not in entry
    total = math.sqrt(sum(float(torch.linalg.norm(deltas[e["module"]])) ** 2 for e in prof["modules"]))
    assert prof["totals"]["frobenius_norm"] == pytest.approx(total, rel=1e-4)


def test_low_rank_lora_spectrum(base):
    """A rank-r LoRA has r non-zero singular values: all energy in the top r, effective rank ≤ r."""
    model = build_peft_model(base, "lora", r=2, targets=("q_proj", "down_proj"))
    prof = profile_adapter(model, "default", top_k=2)
    for entry in prof["modules"]:
        assert entry["energy_top_k"] == pytest.approx(1.0)
        assert entry["singular_values"][2:] == [0.0] * 14
        assert 1.0 < entry["effective_rank"] <= 2.0 + 1e-6


def test_hand_built_rank_one_update_in_one_head(base):
    """ΔW = scale · b aᵀ with b non-zero only on head 2's rows of q_proj: every number is known in closed form."""
    model = build_peft_model(base, "lora", r=1, alpha=3, targets=("q_proj",), layers_to_transform=[1])
    layer = model.get_base_model().model.layers[1].self_attn.q_proj
    with torch.no_grad():
        layer.lora_A["default"].weight.fill_(0.5)  # a: 64 entries of 0.5 → ‖a‖ = 4
        b = torch.zeros(64, 1)
        b[32:48] = 1.0  # head 2 of 4 (head_dim 16) → ‖b‖ = 4
        layer.lora_B["default"].weight.copy_(b)
    prof = profile_adapter(model, "default")
    (entry,) = prof["modules"]
    expected = 3.0 * 4 * 4  # scale (alpha / r = 3) · ‖b‖ · ‖a‖
    assert entry["module"] == "model.layers.1.self_attn.q_proj"
    assert entry["layer"] == 1
    assert entry["shape"] == [64, 64]
    assert entry["frobenius_norm"] == pytest.approx(expected)
    assert entry["singular_values"][0] == pytest.approx(expected)
    assert entry["singular_values"][1:] == [0.0] * 15
    assert entry["effective_rank"] == pytest.approx(1.0)
    assert entry["energy_top_k"] == pytest.approx(1.0)
    assert entry["head_norms"] == pytest.approx([0.0, 0.0, expected, 0.0])
    assert entry["max_head_share"] == pytest.approx(1.0)
    assert prof["layers"] == {1: {"frobenius_norm": pytest.approx(expected), "modules": 1}}
    assert prof["totals"] == {"frobenius_norm": pytest.approx(expected), "modules": 1, "max_head_share": 1.0}

    # with 8 heads of 8 dims the same rows are heads 4 and 5, half each
    prof8 = profile_adapter(model, "default", num_heads=8, head_dim=8)
    assert prof8["modules"][0]["head_norms"] == pytest.approx([0, 0, 0, 0, expected / 2**0.5, expected / 2**0.5, 0, 0])
    assert prof8["totals"]["max_head_share"] == pytest.approx(0.5)


def test_o_proj_heads_are_columns(base):
    model = build_peft_model(base, "lora", r=1, alpha=1, targets=("o_proj",), layers_to_transform=[0])
    layer = model.get_base_model().model.layers[0].self_attn.o_proj
    with torch.no_grad():
        a = torch.zeros(1, 64)
        a[0, 0:16] = 1.0  # head 0's columns
        a[0, 48:64] = 2.0  # head 3's columns, twice as large
        layer.lora_A["default"].weight.copy_(a)
        layer.lora_B["default"].weight.fill_(1.0)
    entry = profile_adapter(model, "default")["modules"][0]
    # ΔW[:, head h] = b a_hᵀ → ‖b‖·‖a_h‖ with ‖b‖ = 8, ‖a_0‖ = 4, ‖a_3‖ = 8
    assert entry["head_norms"] == pytest.approx([32.0, 0.0, 0.0, 64.0])
    assert entry["max_head_share"] == pytest.approx(64**2 / (32**2 + 64**2))


def test_layers_summary_and_untouched_layers(base):
    model = build_peft_model(base, "loha", targets=("q_proj", "v_proj"), layers_to_transform=[1])
    prof = profile_adapter(model, "default")
    assert set(prof["layers"]) == {1}
    norms = [e["frobenius_norm"] for e in prof["modules"]]
    assert prof["layers"][1]["modules"] == 2
    assert prof["layers"][1]["frobenius_norm"] == pytest.approx(math.sqrt(sum(n * n for n in norms)))


def test_only_the_named_adapter_is_profiled_and_the_model_is_untouched(base):
    model = build_peft_model(base, "lora", targets=("q_proj",), adapter_name="one")
    other = build_peft_model(base, "lora", targets=("v_proj", "k_proj"), seed=1)
    model.add_adapter("two", other.peft_config["default"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prof = profile_adapter(model, "two")
    assert sorted(e["module"].rsplit(".", 1)[-1] for e in prof["modules"]) == ["k_proj", "k_proj", "v_proj", "v_proj"]
    assert {e["module"].rsplit(".", 1)[-1] for e in profile_adapter(model, "one")["modules"]} == {"q_proj"}
    assert profile_adapter(model, "missing")["totals"] == {"frobenius_norm": 0.0, "modules": 0, "max_head_share": None}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_layer_index():
    assert layer_index("model.layers.3.self_attn.q_proj") == 3
    assert layer_index("transformer.h.11.attn.c_attn") == 11
    assert layer_index("lm_head") is None


def test_profile_from_files_equals_the_live_profile(base, tmp_path):
    """Gateway mode profiles adapters from their files alone: same numbers as the loaded adapter."""
    import json

    from peft import PeftModel

    from app.engine.profile import profile_files
    from tests.support.adapter_factory import make_adapter

    make_adapter(tmp_path / "a", base, kind="lora", r=4, alpha=8, seed=3, targets=ATTN)
    live = profile_adapter(PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "a")), "default")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    files = profile_files(
        tmp_path / "a" / "adapter_model.safetensors", config, "default", num_heads=4, num_kv_heads=2, head_dim=16
    )
    by_module = {m["module"].removeprefix("model."): m for m in live["modules"]}
    assert len(files["modules"]) == len(by_module) > 0
    for m in files["modules"]:
        other = by_module[m["module"].removeprefix("model.")]
        assert m["frobenius_norm"] == pytest.approx(other["frobenius_norm"], rel=1e-4)
        assert m["singular_values"] == pytest.approx(other["singular_values"], rel=1e-3, abs=1e-6)
        assert m.get("head_norms") == pytest.approx(other.get("head_norms"), rel=1e-3)
    assert files["totals"]["max_head_share"] == pytest.approx(live["totals"]["max_head_share"], rel=1e-3)
