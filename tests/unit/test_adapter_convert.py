"""Non-LoRA adapters are served as an exactly equivalent LoRA: same logits as PEFT running the original."""

import copy

import pytest
import torch

from app.engine.adapter_convert import convert_to_lora
from app.engine.adapter_files import inspect_adapter
from app.engine.adapter_paths import InvalidAdapterError
from tests.support.adapter_factory import make_adapter, tiny_llama


@pytest.fixture(scope="module")
def base():
    return tiny_llama(seed=0)


@pytest.mark.parametrize("kind", ["adalora", "loha", "lokr"])
def test_conversion_reproduces_the_original_adapter(tmp_path, base, kind):
    from peft import PeftModel

    folder = make_adapter(tmp_path / "root" / kind, base, kind=kind, r=4, alpha=8, seed=3)
    spec = inspect_adapter(tmp_path / "root", kind, kind, base)
    served, info = convert_to_lora(spec, base, tmp_path / "converted", max_rank=64)
    assert served.peft_type == "LORA" and served.mixable and info["conversion_rel_error"] < 1e-3
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    original = PeftModel.from_pretrained(copy.deepcopy(base), str(folder)).eval()
    converted = PeftModel.from_pretrained(copy.deepcopy(base), str(served.path)).eval()
    with torch.no_grad():
        expected = original(input_ids=ids).logits
        got = converted(input_ids=ids).logits
        plain = base(input_ids=ids).logits
    assert not torch.allclose(expected, plain, atol=1e-4)  # the adapter does something
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-3)


def test_full_rank_update_is_refused_with_a_reason(tmp_path, base):
    make_adapter(tmp_path / "root" / "ia3", base, kind="ia3", seed=4)
    spec = inspect_adapter(tmp_path / "root", "ia3", "ia3", base)
    with pytest.raises(InvalidAdapterError, match="not low-rank"):
        convert_to_lora(spec, base, tmp_path / "converted", max_rank=2)


def test_conversion_does_not_touch_the_model(tmp_path, base):
    before = {k: v.clone() for k, v in base.state_dict().items()}
    make_adapter(tmp_path / "root" / "loha", base, kind="loha", r=2, seed=5)
    convert_to_lora(inspect_adapter(tmp_path / "root", "loha", "loha", base), base, tmp_path / "c", max_rank=64)
    after = base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_adalora_with_a_module_pruned_to_rank_zero_converts(tmp_path, base):
    """AdaLoRA's budget can drop a module to rank 0 (seen in the adapter study): the saved file then holds
    zero-sized tensors and an all-False rank pattern for it; the conversion must skip that module, not fail."""
    from peft import PeftModel

    from tests.support.adapter_factory import build_peft_model

    model = build_peft_model(base, kind="adalora", r=4, alpha=8, seed=6)
    config = model.peft_config["default"]
    pattern = {}
    for name, _ in model.named_parameters():
        if name.endswith("lora_E.default"):
            key = name.removeprefix("base_model.model.").removesuffix(".default")
            pattern[key] = [False] * 4 if "layers.0.self_attn.q_proj" in key else [True, True, False, True]
    config.rank_pattern = pattern
    folder = tmp_path / "root" / "ada0"
    model.save_pretrained(str(folder))
    spec = inspect_adapter(tmp_path / "root", "ada0", "ada0", base)
    served, info = convert_to_lora(spec, base, tmp_path / "converted", max_rank=64)
    assert served.peft_type == "LORA" and info["conversion_rel_error"] < 1e-3
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    original = PeftModel.from_pretrained(copy.deepcopy(base), str(folder)).eval()
    converted = PeftModel.from_pretrained(copy.deepcopy(base), str(served.path)).eval()
    with torch.no_grad():
        got, expected = converted(input_ids=ids).logits, original(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-3)
