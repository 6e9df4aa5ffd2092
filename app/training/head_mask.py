"""Head-targeted sparse LoRA: choose attention heads from a ΔW profile and keep every other head's rows untrained.

The adapter is an ordinary LoRA on q/k/v/o of a few layers; inside those layers only the chosen heads may change:

* q_proj / k_proj / v_proj: head h owns output rows h·head_dim … (h+1)·head_dim of ΔW = B·A, i.e. rows of B;
* o_proj: head h owns input columns of ΔW, i.e. columns of A.

``apply_head_mask`` zeroes the other heads' rows of B (already zero at init) and columns of A, and registers a
gradient hook that multiplies those entries' gradients by 0, so with AdamW and no weight decay they stay exactly 0:
ΔW is zero outside the chosen heads and the file is served as any LoRA. The selection is plain data (JSON) so the
choice is reviewable and reproducible: see ``select_heads``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.engine.adapter_tensors import weight_of
from app.engine.profile import layer_index

Q_ROWS = "q_proj"
KV_ROWS = ("k_proj", "v_proj")
O_COLS = "o_proj"


@dataclass
class HeadSelection:
    """Per adapted layer: the query heads (q rows and o columns) and key/value heads (k and v rows) that train."""

    q_heads: dict[int, list[int]] = field(default_factory=dict)
    kv_heads: dict[int, list[int]] = field(default_factory=dict)
    note: str = ""

    @property
    def layers(self) -> list[int]:
        return sorted(set(self.q_heads) | set(self.kv_heads))

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "q_heads": {str(k): v for k, v in sorted(self.q_heads.items())},
            "kv_heads": {str(k): v for k, v in sorted(self.kv_heads.items())},
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadSelection:
        return cls(
            q_heads={int(k): [int(h) for h in v] for k, v in data.get("q_heads", {}).items()},
            kv_heads={int(k): [int(h) for h in v] for k, v in data.get("kv_heads", {}).items()},
            note=str(data.get("note", "")),
        )

    @classmethod
    def load(cls, path: str | Path) -> HeadSelection:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")


def head_energy(profile: dict[str, Any]) -> tuple[dict[int, float], dict[int, list[float]], dict[int, list[float]]]:
    """From a ``profile_adapter``/``profile_files`` result: squared ΔW norm per layer, and per layer the squared
    norm per query head (its q rows + its o columns) and per key/value head (its k rows + its v rows)."""
    layer_sq: dict[int, float] = {}
    q_sq: dict[int, list[float]] = {}
    kv_sq: dict[int, list[float]] = {}
    for entry in profile["modules"]:
        layer = entry.get("layer")
        if layer is None:
            continue
        layer_sq[layer] = layer_sq.get(layer, 0.0) + entry["frobenius_norm"] ** 2
        norms = entry.get("head_norms")
        if not norms:
            continue
        leaf = entry["module"].rsplit(".", 1)[-1]
        target = q_sq if leaf in (Q_ROWS, O_COLS) else kv_sq if leaf in KV_ROWS else None
        if target is None:
            continue
        row = target.setdefault(layer, [0.0] * len(norms))
        for i, n in enumerate(norms):
            row[i] += n * n
    return layer_sq, q_sq, kv_sq


def select_heads(profile: dict[str, Any], n_layers: int, q_per_layer: int, kv_per_layer: int) -> HeadSelection:
    """The ``n_layers`` layers with the largest ΔW energy, and in each the ``q_per_layer`` query heads and
    ``kv_per_layer`` key/value heads with the largest energy (ties broken by the lower index)."""
    layer_sq, q_sq, kv_sq = head_energy(profile)
    layers = sorted(sorted(layer_sq, key=lambda k: (-layer_sq[k], k))[:n_layers])

    def top(values: list[float], k: int) -> list[int]:
        return sorted(sorted(range(len(values)), key=lambda i: (-values[i], i))[:k])

    total = sum(layer_sq.values()) or 1.0
    kept = sum(layer_sq[k] for k in layers)
    return HeadSelection(
        q_heads={k: top(q_sq[k], q_per_layer) for k in layers if k in q_sq},
        kv_heads={k: top(kv_sq[k], kv_per_layer) for k in layers if k in kv_sq},
        note=f"top {n_layers} layers by ΔW energy ({kept / total:.1%} of the probe's), {q_per_layer} query and "
        f"{kv_per_layer} key/value heads each",
    )


def _head_mask(size: int, heads: list[int], head_dim: int) -> torch.Tensor:
    mask = torch.zeros(size)
    for h in heads:
        mask[h * head_dim : (h + 1) * head_dim] = 1.0
    return mask


def apply_head_mask(model, selection: HeadSelection, head_dim: int, adapter_name: str = "default") -> dict[str, int]:
    """Zero and freeze (by gradient hook) every LoRA entry outside the selected heads. Returns
    {"allocated": LoRA parameters in the modules, "trainable": entries that can change, "modules": modules masked}.
    Raises ValueError for a LoRA module in a layer the selection does not cover (the config's layers and the
    selection must agree)."""
    from peft.tuners.lora.layer import LoraLayer

    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    allocated = trainable = modules = 0
    for name, module in inner.named_modules():
        if not isinstance(module, LoraLayer) or adapter_name not in getattr(module, "lora_A", {}):
            continue
        leaf, layer = name.rsplit(".", 1)[-1], layer_index(name)
        a = weight_of(module.lora_A[adapter_name])
        b = weight_of(module.lora_B[adapter_name])
        allocated += a.numel() + b.numel()
        if layer not in selection.q_heads and layer not in selection.kv_heads:
            raise ValueError(f"{name}: layer {layer} has a LoRA module but no head selection")
        if leaf == O_COLS:
            param, mask = a, _head_mask(a.shape[1], selection.q_heads.get(layer, []), head_dim).unsqueeze(0)
            free = b.numel()
        elif leaf == Q_ROWS or leaf in KV_ROWS:
            heads = selection.q_heads.get(layer, []) if leaf == Q_ROWS else selection.kv_heads.get(layer, [])
            param, mask = b, _head_mask(b.shape[0], heads, head_dim).unsqueeze(1)
            free = a.numel()
        else:
            trainable += a.numel() + b.numel()  # not an attention projection: trains in full
            continue
        mask = mask.to(param.device, param.dtype).expand_as(param).contiguous()
        with torch.no_grad():
            param.mul_(mask)
        param.register_hook(lambda grad, m=mask: grad * m)
        trainable += free + int(mask.sum())
        modules += 1
    return {"allocated": allocated, "trainable": trainable, "modules": modules}


def masked_leak(model, selection: HeadSelection, head_dim: int, adapter_name: str = "default") -> float:
    """Largest |entry| outside the selected heads (0.0 when the mask held): a check for tests and the study."""
    from peft.tuners.lora.layer import LoraLayer

    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    worst = 0.0
    for name, module in inner.named_modules():
        if not isinstance(module, LoraLayer) or adapter_name not in getattr(module, "lora_A", {}):
            continue
        leaf, layer = name.rsplit(".", 1)[-1], layer_index(name)
        if leaf == O_COLS:
            a = weight_of(module.lora_A[adapter_name]).detach()
            heads = selection.q_heads.get(layer, []) if layer is not None else []
            keep = _head_mask(a.shape[1], heads, head_dim).bool()
            worst = max(worst, float(a[:, ~keep].abs().max()) if (~keep).any() else 0.0)
        elif leaf == Q_ROWS or leaf in KV_ROWS:
            b = weight_of(module.lora_B[adapter_name]).detach()
            by_layer = selection.q_heads if leaf == Q_ROWS else selection.kv_heads
            heads = by_layer.get(layer, []) if layer is not None else []
            keep = _head_mask(b.shape[0], heads, head_dim).bool()
            worst = max(worst, float(b[~keep].abs().max()) if (~keep).any() else 0.0)
    return worst
