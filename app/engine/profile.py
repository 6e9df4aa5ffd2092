"""What an adapter changes: per-module spectra of the effective weight update ΔW, per-layer and per-head summaries.

ΔW is the difference the adapter makes to a module's weight, i.e. W_merged − W_base:
  * LoRA / AdaLoRA / LoHa / LoKr: PEFT's own `layer.get_delta_weight(adapter)`;
  * DoRA: PEFT's get_delta_weight is only scale·B·A; the merged weight is m/‖W+scale·B·A‖_row · (W+scale·B·A), so ΔW is
    computed from that (the same formula PEFT's DoRA merge uses);
  * IA3: W·(l − 1), PEFT's multiplicative merge.
Matrices are reported in [out_features, in_features] layout (GPT-2 Conv1D weights are transposed to it); embeddings
keep their [num_embeddings, embedding_dim] layout.

Pure function, no caching (the caller caches).
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from app.engine.adapter_tensors import weight_of

TOP_SINGULAR = 16
ATTENTION_ROWS = {"q_proj": "q", "k_proj": "kv", "v_proj": "kv"}
ATTENTION_COLS = {"o_proj"}
_LAYER_RE = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


def layer_index(name: str) -> int | None:
    """The first numeric component of a module name ('model.layers.3.self_attn.q_proj' → 3)."""
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def _text_config(model) -> Any:
    config = getattr(model, "config", None)
    if config is None and callable(getattr(model, "get_base_model", None)):
        config = getattr(model.get_base_model(), "config", None)
    get_text = getattr(config, "get_text_config", None)
    if callable(get_text):
        try:
            config = get_text()
        except Exception:  # a config that cannot produce its text part: use it as is
            pass
    return config


def _head_geometry(model, num_heads, num_kv_heads, head_dim) -> tuple[int | None, int | None, int | None]:
    config = _text_config(model)
    if num_heads is None:
        num_heads = getattr(config, "num_attention_heads", None)
    if num_kv_heads is None:
        num_kv_heads = getattr(config, "num_key_value_heads", None) or num_heads
    if head_dim is None:
        head_dim = getattr(config, "head_dim", None)
        hidden = getattr(config, "hidden_size", None)
        if head_dim is None and hidden and num_heads:
            head_dim = hidden // num_heads
    return num_heads, num_kv_heads, head_dim


def _layout(module, delta: torch.Tensor) -> torch.Tensor:
    """Bring a weight-layout tensor to [out, in] (Conv1D / fan_in_fan_out store [in, out])."""
    return delta.T if getattr(module, "fan_in_fan_out", False) else delta


def _dora_delta(module, adapter_name: str) -> torch.Tensor:
    from peft.utils.integrations import dequantize_module_weight

    base = module.get_base_layer()
    weight = dequantize_module_weight(base).detach().float()
    delta = module.get_delta_weight(adapter_name).detach().float()
    is_embedding = adapter_name in getattr(module, "lora_embedding_A", {})
    if is_embedding:  # DoRA on embeddings normalises columns of the [num_embeddings, dim] weight
        weight, delta = weight.T, delta.T
    else:
        weight, delta = _layout(module, weight), _layout(module, delta)
    magnitude = module.lora_magnitude_vector[adapter_name].weight.detach().float().reshape(-1)
    combined = weight + delta
    merged = (magnitude / torch.linalg.norm(combined, dim=1)).unsqueeze(1) * combined
    out = merged - weight
    return out.T if is_embedding else out


def _is_dora(module, adapter_name: str) -> bool:
    mags = getattr(module, "lora_magnitude_vector", None)
    return mags is not None and adapter_name in mags


def _delta_and_factors(module, adapter_name: str) -> tuple[torch.Tensor, tuple | None] | None:
    """(ΔW in [out, in] layout, low-rank factors (B, core, A) with ΔW = B·core·A or None); None if the module does
    not carry this adapter."""
    from peft.tuners.ia3.layer import IA3Layer
    from peft.tuners.lora.layer import LoraLayer
    from peft.tuners.lycoris_utils import LycorisLayer

    if isinstance(module, LoraLayer):
        lora_a = getattr(module, "lora_A", {})
        emb_a = getattr(module, "lora_embedding_A", {})
        if adapter_name not in lora_a and adapter_name not in emb_a:
            return None
        if _is_dora(module, adapter_name):
            return _dora_delta(module, adapter_name), None
        # every LoRA layer kind (Linear, Embedding, Conv) defines it; peft's LoraLayer base does not declare it
        delta = module.get_delta_weight(adapter_name).detach().float()  # type: ignore[attr-defined]
        if adapter_name in emb_a:
            return delta, None  # embedding layout: rows are tokens
        return _layout(module, delta), _lora_factors(module, adapter_name)
    if isinstance(module, LycorisLayer):
        if adapter_name not in module._available_adapters:
            return None
        delta = module.get_delta_weight(adapter_name).detach().float()
        return _layout(module, delta.reshape(weight_of(module.get_base_layer()).shape)), None
    if isinstance(module, IA3Layer):
        if adapter_name not in module.ia3_l:
            return None
        weight = weight_of(module.get_base_layer()).detach().float()
        scale = module.ia3_l[adapter_name].detach().float()
        scale = scale.T if getattr(module, "fan_in_fan_out", False) else scale
        return _layout(module, weight * (scale - 1.0)), None
    get_delta = getattr(module, "get_delta_weight", None)
    if callable(get_delta):
        try:
            return _layout(module, get_delta(adapter_name).detach().float()), None
        except (KeyError, AttributeError):
            return None
    return None


def _lora_factors(module, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """ΔW = B · core · A for plain LoRA / AdaLoRA Linear layers (lets the spectrum come from an r×r matrix)."""
    a, b = module.lora_A[adapter_name], module.lora_B[adapter_name]
    a = (a.weight if hasattr(a, "weight") else a).detach().float()
    b = (b.weight if hasattr(b, "weight") else b).detach().float()
    if a.dim() != 2 or b.dim() != 2:
        return None
    scale = float(module.scaling[adapter_name])
    lora_e = getattr(module, "lora_E", None)
    if lora_e is not None and adapter_name in lora_e:  # AdaLoRA: B (A ⊙ E) · scaling / (ranknum + 1e-5)
        e = lora_e[adapter_name].detach().float().reshape(-1)
        scale = scale / (float(module.ranknum[adapter_name]) + 1e-5)
        return b, torch.diag(e) * scale, a
    return b, torch.eye(a.shape[0]) * scale, a


def _singular_values(delta: torch.Tensor, factors) -> torch.Tensor:
    """All singular values, descending (float32). With low-rank factors ΔW = B·C·A = Q_B (R_B C R_Aᵀ) Q_Aᵀ, so the
    non-zero singular values are those of the r×r middle matrix — exact and far cheaper than an SVD of ΔW."""
    n = min(delta.shape)
    if factors is not None:
        b, core, a = factors
        if b.shape[1] <= n and a.shape[0] <= n:
            _, r_b = torch.linalg.qr(b)
            _, r_a = torch.linalg.qr(a.T)
            s = torch.linalg.svdvals(r_b @ core @ r_a.T)
            return torch.cat([s, s.new_zeros(n - s.numel())]) if s.numel() < n else s
    return torch.linalg.svdvals(delta)


def _spectrum_stats(s: torch.Tensor, top_k: int) -> dict:
    sq = s.double() ** 2
    total = float(sq.sum())
    if total <= 0.0:
        return {"effective_rank": 0.0, "energy_top_k": 0.0}
    p = s.double() / float(s.double().sum())
    p = p[p > 0]
    entropy = float(-(p * p.log()).sum())
    return {"effective_rank": math.exp(entropy), "energy_top_k": float(sq[:top_k].sum()) / total}


def _head_norms(kind: str, delta: torch.Tensor, n_heads: int | None, head_dim: int | None) -> list[float] | None:
    if not n_heads or not head_dim:
        return None
    if kind == "rows":
        if delta.shape[0] != n_heads * head_dim:
            return None
        per_head = delta.reshape(n_heads, head_dim, delta.shape[1])
        return [float(x) for x in torch.linalg.norm(per_head.reshape(n_heads, -1), dim=1)]
    if delta.shape[1] != n_heads * head_dim:
        return None
    per_head = delta.reshape(delta.shape[0], n_heads, head_dim).permute(1, 0, 2)
    return [float(x) for x in torch.linalg.norm(per_head.reshape(n_heads, -1), dim=1)]


def _module_entry(name: str, delta: torch.Tensor, factors, geometry: tuple, top_k: int) -> dict[str, Any]:
    n_heads, n_kv, h_dim = geometry
    s = _singular_values(delta, factors)
    entry: dict[str, Any] = {
        "module": name,
        "layer": layer_index(name),
        "shape": list(delta.shape),
        "frobenius_norm": float(torch.linalg.norm(delta)),
        "singular_values": [float(x) for x in s[:TOP_SINGULAR]],
        **_spectrum_stats(s, top_k),
    }
    leaf = name.rsplit(".", 1)[-1]
    heads = None
    if leaf in ATTENTION_ROWS:
        heads = _head_norms("rows", delta, n_heads if ATTENTION_ROWS[leaf] == "q" else n_kv, h_dim)
    elif leaf in ATTENTION_COLS:
        heads = _head_norms("cols", delta, n_heads, h_dim)
    if heads is not None:
        squares = [h * h for h in heads]
        module_sq = sum(squares)
        entry["head_norms"] = heads
        entry["max_head_share"] = max(squares) / module_sq if module_sq > 0 else 0.0
    return entry


def _summarize(adapter_name: str, modules: list[dict]) -> dict:
    layers: dict[int, dict] = {}
    head_sq_total = head_sq_max = 0.0
    for entry in modules:
        if entry.get("head_norms"):
            squares = [h * h for h in entry["head_norms"]]
            head_sq_total += sum(squares)
            head_sq_max = max(head_sq_max, *squares)
        if entry["layer"] is not None:
            summary = layers.setdefault(entry["layer"], {"frobenius_norm": 0.0, "modules": 0})
            summary["frobenius_norm"] += entry["frobenius_norm"] ** 2
            summary["modules"] += 1
    for summary in layers.values():
        summary["frobenius_norm"] = math.sqrt(summary["frobenius_norm"])
    return {
        "adapter": adapter_name,
        "modules": modules,
        "layers": dict(sorted(layers.items())),
        "totals": {
            "frobenius_norm": math.sqrt(sum(m["frobenius_norm"] ** 2 for m in modules)),
            "modules": len(modules),
            # the largest single attention head's share of all squared head norms (1.0 = the whole attention update
            # sits in one head of one projection); None without attention projections
            "max_head_share": (head_sq_max / head_sq_total) if head_sq_total > 0 else None,
        },
    }


def profile_adapter(
    model,
    adapter_name: str,
    top_k: int = 4,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    head_dim: int | None = None,
) -> dict:
    """Profile what `adapter_name` (loaded in the PeftModel `model`) changes. Returns
    {"modules": [per-module dicts], "layers": {layer: {"frobenius_norm", "modules"}},
     "totals": {"frobenius_norm", "modules", "max_head_share"}}; see the module docstring for ΔW."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    geometry = _head_geometry(model, num_heads, num_kv_heads, head_dim)
    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    modules: list[dict] = []
    with torch.no_grad():
        for name, module in inner.named_modules():
            if not isinstance(module, BaseTunerLayer):
                continue
            found = _delta_and_factors(module, adapter_name)
            if found is not None:
                modules.append(_module_entry(name, *found, geometry, top_k))
    return _summarize(adapter_name, modules)


def profile_files(
    weights: Any,
    config: dict,
    adapter_name: str,
    top_k: int = 4,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    head_dim: int | None = None,
) -> dict:
    """Profile a LoRA adapter from its files alone (gateway mode: the base model lives in the upstream).
    ΔW = scale · B · A per module; for DoRA this is the directional update only (its magnitude rescaling needs the
    base weights). Head norms need the attention geometry (from the adapter's base model config when readable)."""
    from safetensors.torch import load_file

    from app.engine.adapter_config import pattern, pattern_value
    from app.engine.adapter_paths import InvalidAdapterError

    if str(config.get("peft_type", "")).upper() != "LORA":
        raise InvalidAdapterError("a profile without the base model is available for LoRA/DoRA adapters only")
    tensors = load_file(str(weights), device="cpu")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        parts = key.removeprefix("base_model.model.").split(".")
        for i, part in enumerate(parts):
            if part in ("lora_A", "lora_B"):
                pairs.setdefault(".".join(parts[:i]), {})[part] = tensor.float()
                break
    r, alpha = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
    ranks, alphas = pattern(config, "rank_pattern"), pattern(config, "alpha_pattern")
    geometry = (num_heads, num_kv_heads or num_heads, head_dim)
    modules = []
    with torch.no_grad():
        for name in sorted(pairs):
            ab = pairs[name]
            if set(ab) != {"lora_A", "lora_B"}:
                continue
            rank = int(pattern_value(ranks, name, r))
            scale_alpha = float(pattern_value(alphas, name, alpha))
            scale = scale_alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
            a, b = ab["lora_A"], ab["lora_B"]
            modules.append(_module_entry(name, scale * (b @ a), (b, torch.eye(a.shape[0]) * scale, a), geometry, top_k))
    profile = _summarize(adapter_name, modules)
    if config.get("use_dora"):
        profile["note"] = "DoRA: directional update scale*B*A only; the magnitude vector needs the base weights"
    return profile
