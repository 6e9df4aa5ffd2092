"""Serve non-LoRA PEFT adapters (AdaLoRA, LoHa, LoKr, IA3) as an exactly equivalent LoRA.

PEFT holds several adapters in one live model only if they share a tuner type, and only LoRA rows can share a
mixed batch. Every adapter's effect on a module is an update ΔW; when ΔW has rank ≤ the configured maximum (true
for AdaLoRA by construction, for LoHa up to r², often for LoKr), its SVD gives LoRA factors B·A = ΔW exactly. The
conversion runs on copies of only the targeted modules, so the serving model is never touched, and is refused
with a clear message when the best LoRA of allowed rank would differ from ΔW by more than the tolerance.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import torch

from app.engine.adapter_files import AdapterSpec
from app.engine.adapter_paths import InvalidAdapterError
from app.engine.adapter_tensors import base_modules
from app.engine.profile import _delta_and_factors


def _skeleton(model: torch.nn.Module, names: list[str]) -> torch.nn.Module:
    """A bare module tree holding CPU copies of just the named modules, at the same attribute paths."""
    originals = base_modules(model)
    root = torch.nn.Module()
    for name in names:
        parent = root
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        parent.add_module(leaf, copy.deepcopy(originals[name]).float().cpu())
    return root


def _tensor_module(key: str) -> str:
    """'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' -> 'model.layers.0.self_attn.q_proj'."""
    name = key.removeprefix("base_model.model.")
    for marker in (".lora_", ".hada_", ".lokr_", ".ia3_"):
        if marker in name:
            return name.split(marker, 1)[0]
    return name.rsplit(".", 1)[0]


def _deltas(spec: AdapterSpec, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft import PeftConfig, PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    config = PeftConfig.from_pretrained(str(spec.path))
    config.inference_mode = True
    # AdaLoRA can prune a module to rank 0: its rank-pattern entry and zero-sized tensors name a module the
    # skeleton does not hold (it changes nothing), so both are left out
    present = set(spec.modules)
    if isinstance(getattr(config, "rank_pattern", None), dict):
        config.rank_pattern = {k: v for k, v in config.rank_pattern.items() if _tensor_module(k) in present}
    skeleton = _skeleton(model, spec.modules)
    peft_model = PeftModel(skeleton, config, adapter_name="default")
    state = {
        key: tensor
        for key, tensor in load_file(str(spec.weights)).items()
        if tensor.numel() > 0 and _tensor_module(key) in present
    }
    set_peft_model_state_dict(peft_model, state, adapter_name="default")
    deltas = {}
    with torch.no_grad():
        for name in spec.modules:
            found = _delta_and_factors(peft_model.get_base_model().get_submodule(name), "default")
            if found is not None:
                deltas[name] = found[0]
    return deltas


def convert_to_lora(
    spec: AdapterSpec, model: torch.nn.Module, out_dir: Path, max_rank: int, tolerance: float = 1e-3
) -> tuple[AdapterSpec, dict]:
    """Write an equivalent LoRA adapter to out_dir; returns its spec (served as LoRA) and conversion facts."""
    from safetensors.torch import save_file

    deltas = _deltas(spec, model)
    if not deltas:
        raise InvalidAdapterError("adapter changes no module that can be served")
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    worst = 0.0
    rank = 1
    for name, delta in deltas.items():
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        total = float((s**2).sum())
        k = min(max_rank, int((s > s[0] * 1e-6).sum()) if total > 0 else 1) or 1
        error = float((s[k:] ** 2).sum() / total) ** 0.5 if total > 0 else 0.0
        worst = max(worst, error)
        root_s = s[:k].sqrt()
        factors[name] = (u[:, :k] * root_s, root_s.unsqueeze(1) * vh[:k])  # B [out, k], A [k, in]
        rank = max(rank, k)
    if worst > tolerance:
        raise InvalidAdapterError(
            f"{spec.kind} adapter is not low-rank enough to serve: the best LoRA of rank ≤ {max_rank} differs from "
            f"its update by {worst:.1%} (tolerance {tolerance:.1%}); raise TONEWATCH_MAX_ADAPTER_RANK or retrain as "
            "LoRA"
        )
    tensors = {}
    for name, (b, a) in factors.items():  # pad to one rank with zero rows/cols: still exactly ΔW
        k = b.shape[1]
        prefix = f"base_model.model.{name}"
        tensors[f"{prefix}.lora_A.weight"] = torch.cat([a, a.new_zeros(rank - k, a.shape[1])]).contiguous()
        tensors[f"{prefix}.lora_B.weight"] = torch.cat([b, b.new_zeros(b.shape[0], rank - k)], 1).contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "target_modules": sorted(deltas),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_dora": False,
        "inference_mode": True,
    }
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    served = replace(
        spec, path=out_dir, weights=out_dir / "adapter_model.safetensors", peft_type="LORA", mixable=True, config=config
    )
    return served, {"served_as": "lora", "served_rank": rank, "conversion_rel_error": worst}
