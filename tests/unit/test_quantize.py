"""The opt-in packed (fp16 / int8) CPU path: layers stay nn.Linear for PEFT, results track fp32, adapters (LoRA in
mixed lanes, DoRA in its own lane) still apply on top, and fp16 greedy outputs do not depend on batch neighbours."""

import asyncio
import copy

import pytest
import torch
from torch import nn

from app.engine import quantize
from app.engine.adapters import AdapterRegistry
from app.engine.worker import Engine
from app.metrics import Metrics
from tests.support.adapter_factory import make_adapter, tiny_llama
from tests.support.engine_driver import greedy_choice
from tests.support.greedy import TINY_MARGIN, assert_same_greedy


@pytest.mark.parametrize("mode", ["fp16", "int8"])
def test_packed_linear_tracks_fp32_and_stays_a_linear(mode):
    # fp16 weights: rounding to 11 significant bits, whatever the kernel; int8: the bound the product promises (it
    # refuses int8 on a CPU whose measured kernel exceeds it, see the next test)
    tolerance = 2e-3 if mode == "fp16" else quantize.INT8_MAX_ERROR
    torch.manual_seed(0)
    source = nn.Linear(96, 40, bias=True)
    packed = quantize.PackedLinear(source, mode)
    assert isinstance(packed, nn.Linear) and packed.in_features == 96 and packed.out_features == 40
    x = torch.randn(3, 5, 96)
    with torch.no_grad():
        expected, got = source(x), packed(x)
    assert got.shape == expected.shape
    assert float((got - expected).norm() / expected.norm()) < tolerance
    # .weight dequantizes (what DoRA's norm and shape checks read)
    assert packed.weight.shape == source.weight.shape
    assert float((packed.weight - source.weight).norm() / source.weight.norm()) < tolerance


def test_int8_kernel_is_the_more_accurate_setting_on_this_cpu(monkeypatch):
    kernel = quantize.int8_kernel()
    assert kernel.error <= kernel.error_other
    assert quantize.int8_kernel() is kernel  # measured once per process
    if kernel.error <= quantize.INT8_MAX_ERROR:
        layer = quantize.PackedLinear(nn.Linear(64, 32), "int8")
        assert layer.reduce_range == kernel.reduce_range
    # a CPU whose best setting is beyond the documented bound gets a clear refusal, not a lossy model
    monkeypatch.setattr(quantize, "INT8_MAX_ERROR", kernel.error / 2)
    with pytest.raises(quantize.QuantizationError, match="lossy on this CPU"):
        quantize.apply(tiny_llama(), "int8", "cpu")
    choices: dict[str, str] = {}
    quantize.apply(tiny_llama(), "fp16", "cpu", choices)
    assert choices == {"quantize": "fp16"}


def test_quantize_swaps_every_linear_and_keeps_the_embedding():
    model = tiny_llama()
    reference = copy.deepcopy(model)
    n = quantize.quantize(model, "fp16")
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    assert n == 2 * 7 + 1 and not linears  # 7 per layer + lm_head
    assert isinstance(model.model.embed_tokens, nn.Embedding)
    ids = torch.tensor([[1, 5, 9, 200, 33]])
    with torch.no_grad():
        a, b = reference(ids).logits, model(ids).logits
    assert float((a - b).abs().max()) < 1e-2


def test_refused_off_cpu_and_for_unknown_modes():
    with pytest.raises(quantize.QuantizationError, match="CPU path"):
        quantize.apply(tiny_llama(), "fp16", "cuda")
    with pytest.raises(quantize.QuantizationError, match="must be one of"):
        quantize.apply(tiny_llama(), "int4", "cpu")
    model = tiny_llama()
    assert quantize.apply(model, "none", "cpu") is model


async def test_adapters_on_a_packed_base_mixed_batches_equal_solo_runs(tmp_path, bundled):
    _, tokenizer, _ = bundled
    base = tiny_llama()
    make_adapter(tmp_path / "lora-a", base, kind="lora", seed=1, targets=("q_proj", "v_proj", "down_proj"))
    make_adapter(tmp_path / "dora-b", base, kind="dora", seed=2)
    model = copy.deepcopy(base)
    quantize.quantize(model, "fp16")
    engine = Engine(model, tokenizer, device="cpu", metrics=Metrics(), max_wait_ms=30)
    engine.eos_ids = {-1}  # random weights: every row runs to max_tokens
    engine.start()
    registry = AdapterRegistry(engine, Metrics(), tmp_path, "base")
    try:
        await registry.load("lora-a", "lora-a")
        await registry.load("dora-b", "dora-b")
        assert registry.adapters["dora-b"].spec.kind == "dora"
        prompts = {None: [1, 520 % 512, 33, 90], "lora-a": [1, 77, 88, 99, 100], "dora-b": [1, 5, 6]}
        solo = {a: await greedy_choice(engine, p, a) for a, p in prompts.items()}
        assert solo["lora-a"]["message"] != (await greedy_choice(engine, prompts["lora-a"], None))["message"]
        together = await asyncio.gather(*[greedy_choice(engine, p, a) for a, p in prompts.items() for _ in range(2)])
        for choice, adapter in zip(together, [a for a in prompts for _ in range(2)], strict=True):
            assert_same_greedy(solo[adapter], choice, TINY_MARGIN)
    finally:
        registry.close()
        engine.stop()
