"""Opt-in int8 CPU path (TONEWATCH_QUANTIZE=int8): the base model's linear layers keep int8 weights and run as
fbgemm dynamic-quantized matmuls (activations quantized per call, int32 accumulation, fp32 out).

Why this and not the alternatives: a decode step on a CPU is bound by reading the weights, and int8 reads a quarter
of fp32's bytes; measured here (bench/results/quantized.json) fbgemm's kernels beat both fp32 and
torch._weight_int8pack_mm (which has no fast path on this AVX2 CPU). The module stays an nn.Linear subclass so PEFT
wraps it as it wraps any Linear: LoRA/DoRA factors stay fp32 and are added on top of the int8 base output
("adapters in higher precision"); DoRA's weight norm reads `.weight`, which dequantizes on demand.

Which activation range the int8 kernel uses is measured at start-up (`int8_kernel`): without reduce_range, AVX2
CPUs saturate fbgemm's 16-bit pair sums (relative error 0.09–0.15 on random layers, AMD EPYC) while VNNI CPUs
accumulate in 32 bits and lose half the error with full 8-bit activations. Where neither choice stays within
INT8_MAX_ERROR, int8 is refused at start-up with the measured figures.

Caveat: fbgemm's quantized ops are deprecated upstream (torch still ships and tests them in 2.13). If they go,
this module fails at start-up with a clear error, never at request time.
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger("tonewatch.engine")
QUANTIZE_MODES = ("none", "fp16", "int8")
# the documented bound of the int8 path: relative error of a layer's output against fp32 on the start-up probe
INT8_MAX_ERROR = 0.05
PROBE_SHAPES = ((576, 1536), (1536, 576), (96, 40))  # (in, out): the bundled model's MLP shapes and a small one


class QuantizationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Int8Kernel:
    """The measured int8 choice for this CPU: reduce_range, and the worst relative error with and without it."""

    reduce_range: bool
    error: float  # worst relative error over the probe shapes with the chosen setting
    error_other: float  # the same with the other setting

    def describe(self) -> str:
        return f"reduce_range={self.reduce_range} (rel. error {self.error:.3f}; other setting {self.error_other:.3f})"


def _int8_pack(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
    zeros = torch.zeros_like(scales, dtype=torch.long)
    with warnings.catch_warnings():  # the deprecation the module docstring names
        warnings.simplefilter("ignore", UserWarning)
        qweight = torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(qweight, bias)


@functools.cache
def int8_kernel() -> Int8Kernel:
    """Run fbgemm's dynamic int8 linear both ways on seeded random layers and keep the more accurate setting.
    Deterministic for a given CPU and torch build; a few milliseconds."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise QuantizationError("TONEWATCH_QUANTIZE=int8 needs torch's fbgemm engine (x86 CPU builds have it)")
    torch.backends.quantized.engine = "fbgemm"
    generator = torch.Generator().manual_seed(0)
    worst = {False: 0.0, True: 0.0}
    with torch.no_grad():
        for fan_in, fan_out in PROBE_SHAPES:
            bound = fan_in**-0.5  # nn.Linear's initialisation range
            weight = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
            bias = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound
            x = torch.randn(16, fan_in, generator=generator)
            expected = torch.nn.functional.linear(x, weight, bias)
            packed = _int8_pack(weight, bias)
            for reduce_range in (False, True):
                got = torch.ops.quantized.linear_dynamic(x, packed, reduce_range)
                error = float((got - expected).norm() / expected.norm())
                worst[reduce_range] = max(worst[reduce_range], error)
    chosen = min(worst, key=lambda k: worst[k])
    return Int8Kernel(reduce_range=chosen, error=worst[chosen], error_other=worst[not chosen])


class PackedLinear(nn.Linear):
    """y = x W^T + b with W prepacked for fbgemm: "fp16" keeps W in half precision (fp32 activations and
    accumulation: weight-only, a row's result never depends on its batch neighbours); "int8" keeps W as
    per-output-channel symmetric int8 and quantizes activations per call (per tensor, so across the batch)."""

    def __init__(self, source: nn.Linear, mode: str):
        nn.Module.__init__(self)  # not nn.Linear.__init__: it would allocate an fp32 weight
        self.in_features, self.out_features, self.mode = source.in_features, source.out_features, mode
        weight = source.weight.detach().float().cpu()
        bias = source.bias.detach().float().cpu() if source.bias is not None else None
        self.reduce_range = False
        if mode == "fp16":
            self._packed = torch.ops.quantized.linear_prepack_fp16(weight, bias)
        else:
            self.reduce_range = int8_kernel().reduce_range  # measured on this CPU (see int8_kernel)
            self._packed = _int8_pack(weight, bias)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """The dequantized weight (fp32, a fresh tensor): for code that needs W itself (DoRA's norm, shapes)."""
        if self.mode == "fp16":
            weight, _ = torch.ops.quantized.linear_unpack_fp16(self._packed)
            return weight.float()
        qweight, _ = torch.ops.quantized.linear_unpack(self._packed)
        return qweight.dequantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).float()
        if self.mode == "fp16":
            out = torch.ops.quantized.linear_dynamic_fp16(flat, self._packed)
        else:
            out = torch.ops.quantized.linear_dynamic(flat, self._packed, self.reduce_range)
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.mode}"


def quantize(model: nn.Module, mode: str, *, lm_head: bool = True) -> int:
    """Swap every nn.Linear of a (not yet adapted) causal LM for PackedLinear in place; returns how many.
    The lm_head is tied to the embeddings here: it gets its own packed copy, the embedding lookup stays fp32."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise QuantizationError(f"TONEWATCH_QUANTIZE={mode} needs torch's fbgemm engine (x86 CPU builds have it)")
    torch.backends.quantized.engine = "fbgemm"
    if mode == "int8":
        kernel = int8_kernel()
        if kernel.error > INT8_MAX_ERROR:
            raise QuantizationError(
                f"TONEWATCH_QUANTIZE=int8 would be lossy on this CPU: fbgemm's int8 matmul is off fp32 by "
                f"{kernel.error:.3f} (relative) with {kernel.describe()}, beyond the bound {INT8_MAX_ERROR}; "
                "use fp16 or none"
            )
        log.info("int8 kernel on this CPU: %s", kernel.describe())
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is nn.Linear and (lm_head or not name.endswith("lm_head"))
    ]
    for name, module in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, PackedLinear(module, mode))
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "tie_word_embeddings", False):
        # the head is no longer the embedding matrix: never re-tie (it would overwrite the int8 head)
        config.tie_word_embeddings = False
        if hasattr(model, "_tied_weights_keys"):
            model._tied_weights_keys = None  # type: ignore[assignment]  # a transformers attribute, not a Module
    log.info("%s: %d linear layers packed (lm_head %s)", mode, len(targets), "included" if lm_head else "fp32")
    return len(targets)


def apply(model: nn.Module, mode: str, device: str, choices: dict[str, str] | None = None) -> nn.Module:
    """Quantize per TONEWATCH_QUANTIZE; the measured int8 kernel choice goes into `choices` (see app.engine.cpu)."""
    if mode == "none":
        return model
    if mode not in QUANTIZE_MODES:
        raise QuantizationError(f"TONEWATCH_QUANTIZE must be one of {QUANTIZE_MODES}, not {mode!r}")
    if not device.startswith("cpu"):
        raise QuantizationError(f"TONEWATCH_QUANTIZE={mode} is a CPU path; on a GPU use TONEWATCH_DTYPE=bfloat16")
    quantize(model, mode)
    if choices is not None:
        choices["quantize"] = mode if mode != "int8" else f"int8, {int8_kernel().describe()}"
    return model
