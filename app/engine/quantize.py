"""Opt-in int8 CPU path (TONEWATCH_QUANTIZE=int8): the base model's linear layers keep int8 weights and run as
fbgemm dynamic-quantized matmuls (activations quantized per call, int32 accumulation, fp32 out).

Why this and not the alternatives: a decode step on a CPU is bound by reading the weights, and int8 reads a quarter
of fp32's bytes; measured here (bench/results/quantized.json) fbgemm's kernels beat both fp32 and
torch._weight_int8pack_mm (which has no fast path on this AVX2 CPU). The module stays an nn.Linear subclass so PEFT
wraps it as it wraps any Linear: LoRA/DoRA factors stay fp32 and are added on top of the int8 base output
("adapters in higher precision"); DoRA's weight norm reads `.weight`, which dequantizes on demand.

Caveat: fbgemm's quantized ops are deprecated upstream (torch still ships and tests them in 2.13). If they go,
this module fails at start-up with a clear error, never at request time.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

log = logging.getLogger("tonewatch.engine")
QUANTIZE_MODES = ("none", "fp16", "int8")


class QuantizationError(RuntimeError):
    pass


class PackedLinear(nn.Linear):
    """y = x W^T + b with W prepacked for fbgemm: "fp16" keeps W in half precision (fp32 activations and
    accumulation: weight-only, a row's result never depends on its batch neighbours); "int8" keeps W as
    per-output-channel symmetric int8 and quantizes activations per call (per tensor, so across the batch)."""

    def __init__(self, source: nn.Linear, mode: str):
        nn.Module.__init__(self)  # not nn.Linear.__init__: it would allocate an fp32 weight
        self.in_features, self.out_features, self.mode = source.in_features, source.out_features, mode
        weight = source.weight.detach().float().cpu()
        bias = source.bias.detach().float().cpu() if source.bias is not None else None
        if mode == "fp16":
            self._packed = torch.ops.quantized.linear_prepack_fp16(weight, bias)
        else:
            scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
            zeros = torch.zeros_like(scales, dtype=torch.long)
            with warnings.catch_warnings():  # the deprecation the module docstring names
                warnings.simplefilter("ignore", UserWarning)
                qweight = torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qweight, bias)
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
            # full 8-bit activations: this CPU's fbgemm path accumulates in 32 bits (reduce_range doubled the error)
            out = torch.ops.quantized.linear_dynamic(flat, self._packed, False)
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.mode}"


def quantize(model: nn.Module, mode: str, *, lm_head: bool = True) -> int:
    """Swap every nn.Linear of a (not yet adapted) causal LM for PackedLinear in place; returns how many.
    The lm_head is tied to the embeddings here: it gets its own packed copy, the embedding lookup stays fp32."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise QuantizationError(f"TONEWATCH_QUANTIZE={mode} needs torch's fbgemm engine (x86 CPU builds have it)")
    torch.backends.quantized.engine = "fbgemm"
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
            model._tied_weights_keys = None
    log.info("%s: %d linear layers packed (lm_head %s)", mode, len(targets), "included" if lm_head else "fp32")
    return len(targets)


def apply(model: nn.Module, mode: str, device: str) -> nn.Module:
    if mode == "none":
        return model
    if mode not in QUANTIZE_MODES:
        raise QuantizationError(f"TONEWATCH_QUANTIZE must be one of {QUANTIZE_MODES}, not {mode!r}")
    if not device.startswith("cpu"):
        raise QuantizationError(f"TONEWATCH_QUANTIZE={mode} is a CPU path; on a GPU use TONEWATCH_DTYPE=bfloat16")
    quantize(model, mode)
    return model
