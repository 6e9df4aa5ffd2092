"""Validate a PEFT adapter folder BEFORE any of it touches the served model.

`inspect_adapter` reads only `adapter_config.json` (JSON) and `adapter_model.safetensors` (via `safetensors.safe_open`,
which never executes code). Pickle-based weights (`adapter_model.bin`, `*.pt`, ...) are refused, never unpickled.
Every tensor is checked against the base module it would adapt, exactly the way PEFT would build that module, so a
later `load_adapter` cannot fail halfway with a size mismatch or silently load nothing.

Failures raise `InvalidAdapterError` whose message is meant for a human (the API answers 400 with it).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from app.engine.adapter_config import ALLOWED_TASK_TYPES, SUPPORTED_PEFT_TYPES, lora_variants, pattern, rank_and_alpha
from app.engine.adapter_paths import (
    CONFIG_NAME,
    PICKLE_SUFFIXES,
    TENSOR_PARTS,
    WEIGHTS_NAME,
    InvalidAdapterError,
    file_inside,
    read_config,
    resolve_inside,
    validate_name,
)
from app.engine.adapter_tensors import (
    base_modules,
    base_params,
    check_adalora,
    check_full_param,
    check_ia3,
    check_loha,
    check_lokr,
    check_lora,
    check_trainable_tokens,
    features,
    name_matches_list,
    open_weights,
    resolve_targets,
    split_key,
    strip_prefix,
)


@dataclass
class AdapterSpec:
    name: str
    path: Path
    peft_type: str  # as in adapter_config.json, upper case: "LORA", "ADALORA", ...
    kind: str  # "lora" | "dora" | "adalora" | "loha" | "lokr" | "ia3"
    rank: int | None  # r (LoRA/LoHa/LoKr, max over rank_pattern), init_r (AdaLoRA), None (IA3)
    alpha: float | None
    target_modules: list[str]
    size_bytes: int  # config + weights: what gets read when the adapter is loaded
    config: dict
    weights: Path  # the adapter_model.safetensors file
    mixable: bool  # PEFT can run it in a mixed-adapter batch (`adapter_names=`): plain LoRA only
    modules: list[str] = field(default_factory=list)  # base-model module names the adapter changes


@dataclass
class _Folder:
    """What the file-level checks found (before any tensor is compared with the base model)."""

    folder: Path
    config: dict
    weights: Path
    peft_type: str
    kind: str
    rank: int | None
    alpha: float | None
    use_dora: bool
    size: int


def _check_folder(root: Path, relative: str, name: str, max_rank: int, max_bytes: int) -> _Folder:
    try:
        return _read_folder(root, relative, name, max_rank, max_bytes)
    except OSError as e:  # unreadable files: the folder cannot be served, and that is the request's fault
        raise InvalidAdapterError(f"adapter folder {relative[:80]!r} cannot be read: {e.strerror or e}") from e


def _read_folder(root: Path, relative: str, name: str, max_rank: int, max_bytes: int) -> _Folder:
    validate_name(name)
    folder = resolve_inside(root, relative)
    root_resolved = Path(root).resolve()

    config_path = file_inside(root_resolved, folder, CONFIG_NAME, relative)
    config = read_config(config_path, relative)

    peft_type = config.get("peft_type")
    if not isinstance(peft_type, str) or not peft_type:
        raise InvalidAdapterError(f"{CONFIG_NAME}: peft_type is missing")
    peft_type = peft_type.upper()
    if peft_type not in SUPPORTED_PEFT_TYPES:
        raise InvalidAdapterError(f"unsupported peft_type {peft_type!r}; supported: {', '.join(SUPPORTED_PEFT_TYPES)}")
    task_type = config.get("task_type")
    if task_type not in ALLOWED_TASK_TYPES:
        raise InvalidAdapterError(f"task_type {task_type!r} is not a causal-LM adapter (expected CAUSAL_LM or none)")

    weights = file_inside(root_resolved, folder, WEIGHTS_NAME, relative)
    if weights is None:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise InvalidAdapterError(
                f"pickle weights are not loaded; convert to safetensors (found {', '.join(pickles)}, "
                f"need {WEIGHTS_NAME})"
            )
        raise InvalidAdapterError(f"{WEIGHTS_NAME} is missing in {relative!r}")
    assert config_path is not None

    size = config_path.stat().st_size + weights.stat().st_size
    if size > max_bytes:
        raise InvalidAdapterError(f"adapter is {size} bytes, above the limit of {max_bytes} bytes")

    rank, alpha = rank_and_alpha(peft_type, config)
    if rank is not None and rank > max_rank:
        raise InvalidAdapterError(f"adapter rank {rank} is above the limit of {max_rank}")
    use_dora = bool(config.get("use_dora")) and peft_type == "LORA"
    if peft_type == "LORA":
        if config.get("lora_bias"):
            raise InvalidAdapterError("LoRA adapters with lora_bias=True are not supported")
        variants = lora_variants(config)
        if variants:
            raise InvalidAdapterError(
                f"LoRA variant(s) {', '.join(variants)} are not supported (plain LoRA and DoRA are)"
            )
    kind = "dora" if use_dora else peft_type.lower()
    return _Folder(folder, config, weights, peft_type, kind, rank, alpha, use_dora, size)


def inspect_files(root: Path, relative: str, name: str, max_rank: int = 64, max_bytes: int = 64 * 2**20) -> AdapterSpec:
    """The checks that need no base model (gateway mode, where the model lives in the upstream): name, path,
    config, safetensors-only weights that parse, are floating point and finite, rank and size bounds."""
    f = _check_folder(root, relative, name, max_rank, max_bytes)
    tensors = open_weights(f.weights)
    if not tensors:
        raise InvalidAdapterError("adapter contains no weights: adapter would not change the model's output")
    targets = f.config.get("target_modules")
    target_list = sorted(targets) if isinstance(targets, list) else ([targets] if isinstance(targets, str) else [])
    return AdapterSpec(
        name=name,
        path=f.folder,
        peft_type=f.peft_type,
        kind=f.kind,
        rank=f.rank,
        alpha=f.alpha,
        target_modules=target_list,
        size_bytes=f.size,
        config=f.config,
        weights=f.weights,
        mixable=f.peft_type == "LORA" and not f.use_dora,
    )


def inspect_adapter(
    root: Path, relative: str, name: str, base_model: torch.nn.Module, max_rank: int = 64, max_bytes: int = 64 * 2**20
) -> AdapterSpec:
    """Check everything about an adapter folder that can go wrong, without modifying `base_model` (a transformers
    model or a PeftModel wrapping it). Raises InvalidAdapterError with a human-readable reason."""
    f = _check_folder(root, relative, name, max_rank, max_bytes)
    folder, config, weights, peft_type, kind = f.folder, f.config, f.weights, f.peft_type, f.kind
    rank, alpha, use_dora, size = f.rank, f.alpha, f.use_dora, f.size

    modules = base_modules(base_model)
    targeted, target_list = resolve_targets(config, modules, base_model)

    tensors = open_weights(weights)
    if not tensors:
        raise InvalidAdapterError("adapter contains no weights: adapter would not change the model's output")

    # group the tensors by the module they adapt
    parts = TENSOR_PARTS[peft_type]
    groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    others: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        split = split_key(strip_prefix(key), parts)
        if split is None:
            others[strip_prefix(key)] = tensor
            continue
        module, part = split
        if part in groups[module]:
            raise InvalidAdapterError(f"duplicate tensor {part} for module {module!r}")
        groups[module][part] = tensor

    adalora_pattern: dict[str, int] = {}
    if peft_type == "ADALORA":
        for key, mask in pattern(config, "rank_pattern").items():
            if not isinstance(mask, list):
                raise InvalidAdapterError(f"{CONFIG_NAME}: AdaLoRA rank_pattern[{key!r}] must be a list")
            comps = key.split(".")
            module_key = ".".join(comps[:-2] if len(comps) > 2 and comps[-2] in TENSOR_PARTS["ADALORA"] else comps[:-1])
            adalora_pattern[module_key] = sum(bool(x) for x in mask)

    changed: list[str] = []
    for module in sorted(groups):
        if module not in modules:
            raise InvalidAdapterError(f"weights for module {module!r}, which does not exist in the base model")
        if module not in targeted:
            raise InvalidAdapterError(f"weights for module {module!r}, which target_modules does not select")
        feats = features(modules[module])
        group = groups[module]
        if peft_type == "LORA":
            effect = check_lora(module, group, modules[module], feats, config, use_dora, max_rank)
        elif peft_type == "ADALORA":
            assert rank is not None  # only IA3 has no rank
            effect = check_adalora(module, group, feats, config, rank, adalora_pattern)
        elif peft_type == "LOHA":
            effect = check_loha(module, group, feats, config, max_rank)
        elif peft_type == "LOKR":
            effect = check_lokr(module, group, feats, config, max_rank)
        else:
            effect = check_ia3(module, group, feats, config)
        if effect:
            changed.append(module)

    missing = sorted(targeted - set(groups))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InvalidAdapterError(f"missing weights for targeted module(s): {shown}")

    # full tensors outside the adapter factors: modules_to_save copies, trainable tokens, saved base weights
    params = base_params(modules)
    to_save = config.get("modules_to_save") or []
    for key, tensor in sorted(others.items()):
        module, _, pname = key.rpartition(".")
        if module.endswith(".token_adapter") and pname == "trainable_tokens_delta":
            if check_trainable_tokens(module[: -len(".token_adapter")], tensor, modules, config):
                changed.append(module)
            continue
        module = re.sub(r"\.modules_to_save\.[^.]+$", "", module)
        if module and name_matches_list(module, to_save):
            if check_full_param(f"{module}.{pname}", tensor, params, "modules_to_save"):
                changed.append(module)
            continue
        base_key = key.replace(".base_layer.", ".")
        if base_key in params or key in params:
            # PEFT saved a base weight (e.g. save_embedding_layers, bias="all"): loading it would overwrite the shared
            # base model for every request, so only identical copies are acceptable.
            if check_full_param(base_key if base_key in params else key, tensor, params, "base weight"):
                raise InvalidAdapterError(
                    f"tensor {key!r} would overwrite a base-model weight shared by every request; "
                    "retrain with modules_to_save or without saving base weights"
                )
            continue
        raise InvalidAdapterError(f"unexpected tensor {key!r} that maps to no adapter module of the base model")

    if not changed:
        raise InvalidAdapterError(
            "adapter would not change the model's output (all update weights are zero / identity)"
        )

    return AdapterSpec(
        name=name,
        path=folder,
        peft_type=peft_type,
        kind=kind,
        rank=rank,
        alpha=alpha,
        target_modules=target_list,
        size_bytes=size,
        config=config,
        weights=weights,
        mixable=peft_type == "LORA" and not use_dora,
        modules=sorted(set(changed)),
    )
