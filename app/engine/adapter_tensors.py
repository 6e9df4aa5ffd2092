"""The base model's side of validation: which modules an adapter targets, and whether every tensor has exactly the
shape PEFT would build for that module (so a later load cannot fail halfway or silently load nothing)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, overload

import torch

from app.engine.adapter_config import pattern, pattern_value
from app.engine.adapter_paths import CONFIG_NAME, PEFT_PREFIXES, WEIGHTS_NAME, InvalidAdapterError


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PeftModel / tuner (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        return get_base()
    return model


def base_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """name → original module, as PEFT sees names on the un-adapted model ('model.layers.0.self_attn.q_proj'). PEFT
    wrappers (LoRA layers, modules_to_save, trainable tokens) are collapsed to the module they wrap and their internals
    (lora_A.<adapter>, base_layer, ...) are dropped."""
    inner = unwrap_model(model)
    out: dict[str, torch.nn.Module] = {}
    skip: list[str] = []
    for name, raw in inner.named_modules():
        if not name or any(name.startswith(p) for p in skip):
            continue
        module = original_module(raw)
        if module is not None:
            out[name] = module
        if module is not raw:  # a PEFT wrapper: its children are adapter internals
            skip.append(name + ".")
    return out


@overload
def original_module(module: torch.nn.Module) -> torch.nn.Module: ...


@overload
def original_module(module: None) -> None: ...


def original_module(module: torch.nn.Module | None) -> torch.nn.Module | None:
    """The module a PEFT wrapper (LoRA/LoHa/... layer, modules_to_save, trainable tokens) stands in for."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    if isinstance(module, AuxiliaryTrainingWrapper):
        module = module.original_module
    if isinstance(module, BaseTunerLayer):
        module = module.get_base_layer()
    return module


def weight_of(module: torch.nn.Module) -> torch.Tensor:
    """A layer's `weight` (torch types any submodule attribute as Tensor | Module)."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor), type(weight)
    return weight


def features(module: torch.nn.Module) -> tuple[int, int, str] | None:
    """(in_features, out_features, kind) the way PEFT's LoRA layers read them; None for unsupported layer types."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features, "linear"
    if isinstance(module, Conv1D):
        w = module.weight
        shape = getattr(w, "ds_shape", w.shape)
        return int(shape[0]), int(shape[1]), "conv1d"
    if isinstance(module, torch.nn.Embedding):
        return module.num_embeddings, module.embedding_dim, "embedding"
    return None


def _target_matcher(config: dict, targets: Any) -> SimpleNamespace:
    return SimpleNamespace(
        target_modules=targets,
        target_parameters=None,
        exclude_modules=config.get("exclude_modules"),
        modules_to_save=config.get("modules_to_save"),
        layers_to_transform=config.get("layers_to_transform"),
        layers_pattern=config.get("layers_pattern"),
    )


def _matches(matcher: SimpleNamespace, name: str) -> bool:
    from peft.tuners.tuners_utils import check_target_module_exists

    try:
        return bool(check_target_module_exists(matcher, name))
    except re.error as e:
        raise InvalidAdapterError(f"{CONFIG_NAME}: invalid regular expression in target/exclude modules: {e}") from e


def resolve_targets(config: dict, modules: dict[str, torch.nn.Module], model: torch.nn.Module) -> tuple[set, list]:
    """(names of the base modules PEFT would adapt, target_modules as a list for the spec)."""
    targets = config.get("target_modules")
    if targets is None or targets == [] or targets == "":
        raise InvalidAdapterError(f"{CONFIG_NAME}: target_modules is missing")
    if isinstance(targets, str) and targets.lower() == "all-linear":
        out_emb = None
        get_out = getattr(unwrap_model(model), "get_output_embeddings", None)
        if callable(get_out):
            out_emb = original_module(get_out())
        linear = {
            n
            for n, m in modules.items()
            if (feats := features(m)) is not None and feats[2] != "embedding" and m is not out_emb
        }
        # the expanded list still goes through exclude_modules / modules_to_save / layers_to_transform, as in PEFT
        matched = {n for n in linear if _matches(_target_matcher(config, [n]), n)}
        listed = sorted({n.rsplit(".", 1)[-1] for n in matched})
    elif isinstance(targets, str):
        matched = {n for n in modules if _matches(_target_matcher(config, targets), n)}
        listed = sorted({n.rsplit(".", 1)[-1] for n in matched}) or [targets]
    elif isinstance(targets, list) and all(isinstance(t, str) and t for t in targets):
        matched = {n for n in modules if _matches(_target_matcher(config, targets), n)}
        missing = sorted(t for t in set(targets) if not any(_matches(_target_matcher(config, [t]), n) for n in modules))
        if missing:
            raise InvalidAdapterError(f"target modules not found in the base model: {', '.join(missing)}")
        listed = sorted(set(targets))
    else:
        raise InvalidAdapterError(f"{CONFIG_NAME}: target_modules must be a list of names or a regex string")
    if not matched:
        raise InvalidAdapterError(f"target_modules {targets!r} match no module of the base model")
    for name in sorted(matched):
        if features(modules[name]) is None:
            raise InvalidAdapterError(
                f"target module {name!r} is a {type(modules[name]).__name__}; only Linear, Conv1D and Embedding "
                "layers can be adapted"
            )
    return matched, listed


def name_matches_list(name: str, entries) -> bool:
    if isinstance(entries, str):
        return re.fullmatch(entries, name) is not None
    return any(name == e or name.endswith("." + e) for e in entries or [])


def strip_prefix(key: str) -> str:
    for prefix in PEFT_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def split_key(key: str, parts: set[str]) -> tuple[str, str] | None:
    """'model.layers.0.q_proj.lora_A.weight' → ('model.layers.0.q_proj', 'lora_A'). Tolerates an adapter name after
    the part ('lora_A.default.weight'); None when the key is not an adapter factor of this PEFT type."""
    comps = key.split(".")
    for i in range(len(comps) - 1, 0, -1):
        if comps[i] in parts:
            rest = comps[i + 1 :]
            if (
                rest in ([], ["weight"])
                or (len(rest) == 1 and rest[0] != "bias")
                or (len(rest) == 2 and rest[1] == "weight")
            ):
                return ".".join(comps[:i]), comps[i]
            return None
    return None


def open_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensors[key] = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise InvalidAdapterError(f"{WEIGHTS_NAME} is corrupt or not a safetensors file: {e}") from e
    for key, t in tensors.items():
        if not t.is_floating_point():
            raise InvalidAdapterError(f"tensor {key!r} has dtype {t.dtype}; adapter weights must be floating point")
        if not bool(torch.isfinite(t).all()):
            raise InvalidAdapterError(f"tensor {key!r} contains NaN or infinite values")
    return tensors


def shape_error(module: str, part: str, got, expected) -> InvalidAdapterError:
    return InvalidAdapterError(
        f"tensor {part} for module {module!r} has shape {list(got)} but the base model and config need "
        f"{list(expected)} "
        "(was the adapter trained for a different base model?)"
    )


def _require(module: str, group: dict, *names: str) -> None:
    missing = [n for n in names if n not in group]
    if missing:
        raise InvalidAdapterError(f"incomplete weights for module {module!r}: missing {', '.join(missing)}")


def _check_shape(module: str, group: dict, part: str, expected: tuple) -> torch.Tensor:
    t = group[part]
    if tuple(t.shape) != tuple(expected):
        raise shape_error(module, part, t.shape, expected)
    return t


def _nonzero(t: torch.Tensor) -> bool:
    return bool(t.any())


def check_lora(module: str, group: dict, base: torch.nn.Module, feats, config: dict, dora: bool, max_rank: int) -> bool:
    in_f, out_f, layer_kind = feats
    r = pattern_value(pattern(config, "rank_pattern"), module, config["r"])
    alpha = pattern_value(pattern(config, "alpha_pattern"), module, config.get("lora_alpha", 8))
    if r > max_rank:
        raise InvalidAdapterError(f"module {module!r} has rank {r}, above the limit of {max_rank}")
    if layer_kind == "embedding":
        _require(module, group, "lora_embedding_A", "lora_embedding_B")
        a = _check_shape(module, group, "lora_embedding_A", (r, in_f))
        b = _check_shape(module, group, "lora_embedding_B", (out_f, r))
        extra = set(group) - {"lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"}
    else:
        _require(module, group, "lora_A", "lora_B")
        a = _check_shape(module, group, "lora_A", (r, in_f))
        b = _check_shape(module, group, "lora_B", (out_f, r))
        extra = set(group) - {"lora_A", "lora_B", "lora_magnitude_vector"}
    if extra:
        raise InvalidAdapterError(f"unexpected tensors {sorted(extra)} for {layer_kind} module {module!r}")
    changes = _nonzero(a) and _nonzero(b) and alpha != 0
    if dora:
        _require(module, group, "lora_magnitude_vector")
        mag = _check_shape(module, group, "lora_magnitude_vector", (out_f,))
        if not changes:
            # B·A = 0: DoRA still rescales rows unless the magnitude equals the base weight's row norms
            w = weight_of(base).detach().float()
            w = w.T if layer_kind in ("conv1d", "embedding") else w
            changes = not torch.allclose(mag.float(), torch.linalg.norm(w, dim=1), rtol=1e-4, atol=1e-6)
    elif "lora_magnitude_vector" in group:
        raise InvalidAdapterError(f"module {module!r} has a DoRA magnitude vector but use_dora is not set")
    return changes


def check_adalora(module: str, group: dict, feats, config: dict, rank_limit: int, rank_pattern: dict) -> bool:
    in_f, out_f, layer_kind = feats
    if layer_kind != "linear" and layer_kind != "conv1d":
        raise InvalidAdapterError(f"AdaLoRA cannot adapt {layer_kind} module {module!r}")
    _require(module, group, "lora_A", "lora_B", "lora_E")
    k = group["lora_A"].shape[0] if group["lora_A"].dim() == 2 else -1
    expected_k = rank_pattern.get(module, rank_limit)
    if k != expected_k:
        raise InvalidAdapterError(
            f"tensor lora_A for module {module!r} has rank {k} but the config (init_r / rank_pattern) says {expected_k}"
        )
    a = _check_shape(module, group, "lora_A", (k, in_f))
    b = _check_shape(module, group, "lora_B", (out_f, k))
    e = _check_shape(module, group, "lora_E", (k, 1))
    return _nonzero(a) and _nonzero(b) and _nonzero(e) and config.get("lora_alpha", 8) != 0


def check_loha(module: str, group: dict, feats, config: dict, max_rank: int) -> bool:
    in_f, out_f, layer_kind = feats
    if layer_kind == "embedding":
        raise InvalidAdapterError(f"LoHa cannot adapt embedding module {module!r}")
    r = pattern_value(pattern(config, "rank_pattern"), module, config["r"])
    alpha = pattern_value(pattern(config, "alpha_pattern"), module, config.get("alpha", 8))
    if r > max_rank:
        raise InvalidAdapterError(f"module {module!r} has rank {r}, above the limit of {max_rank}")
    if {"hada_t1", "hada_t2"} & set(group):
        raise InvalidAdapterError(f"module {module!r} has convolution (CP) factors but is a {layer_kind} layer")
    _require(module, group, "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
    expected = {"hada_w1_a": (out_f, r), "hada_w1_b": (r, in_f), "hada_w2_a": (out_f, r), "hada_w2_b": (r, in_f)}
    factors = [_check_shape(module, group, part, shape) for part, shape in expected.items()]
    return all(_nonzero(f) for f in factors) and alpha != 0


def check_lokr(module: str, group: dict, feats, config: dict, max_rank: int) -> bool:
    from peft.tuners.lokr.layer import factorization

    in_f, out_f, layer_kind = feats
    if layer_kind == "embedding":
        raise InvalidAdapterError(f"LoKr cannot adapt embedding module {module!r}")
    r = pattern_value(pattern(config, "rank_pattern"), module, config["r"])
    alpha = pattern_value(pattern(config, "alpha_pattern"), module, config.get("alpha", 8))
    if r > max_rank:
        raise InvalidAdapterError(f"module {module!r} has rank {r}, above the limit of {max_rank}")
    if "lokr_t2" in group:
        raise InvalidAdapterError(f"module {module!r} has convolution (CP) factors but is a {layer_kind} layer")
    factor = config.get("decompose_factor", -1)
    factor = factor if isinstance(factor, int) and not isinstance(factor, bool) else -1
    out_l, out_k = factorization(out_f, factor)
    in_m, in_n = factorization(in_f, factor)
    changes = alpha != 0
    for idx, (rows, cols) in (("1", (out_l, in_m)), ("2", (out_k, in_n))):
        full, fa, fb = f"lokr_w{idx}", f"lokr_w{idx}_a", f"lokr_w{idx}_b"
        if full in group:
            if fa in group or fb in group:
                raise InvalidAdapterError(f"module {module!r} has both {full} and {fa}/{fb}")
            changes &= _nonzero(_check_shape(module, group, full, (rows, cols)))
        elif fa in group and fb in group:
            changes &= _nonzero(_check_shape(module, group, fa, (rows, r)))
            changes &= _nonzero(_check_shape(module, group, fb, (r, cols)))
        else:
            raise InvalidAdapterError(f"incomplete weights for module {module!r}: missing {full} (or {fa} and {fb})")
    return bool(changes)


def check_ia3(module: str, group: dict, feats, config: dict) -> bool:
    in_f, out_f, layer_kind = feats
    if layer_kind == "embedding":
        raise InvalidAdapterError(f"IA3 cannot adapt embedding module {module!r}")
    _require(module, group, "ia3_l")
    ff = config.get("feedforward_modules") or []
    is_ff = re.fullmatch(ff, module) is not None if isinstance(ff, str) else any(module.endswith(f) for f in ff)
    t = _check_shape(module, group, "ia3_l", (1, in_f) if is_ff else (out_f, 1))
    return not bool(torch.all(t == 1))


def check_full_param(key: str, tensor: torch.Tensor, params: dict[str, torch.Tensor], owner: str) -> bool:
    """A saved full parameter (modules_to_save copy or a base weight PEFT saved alongside). Returns whether it differs
    from the base model's parameter."""
    base = params.get(key)
    if base is None:
        raise InvalidAdapterError(f"tensor {key!r} ({owner}) does not match any parameter of the base model")
    if tuple(tensor.shape) != tuple(base.shape):
        raise shape_error(key.rsplit(".", 1)[0], key.rsplit(".", 1)[-1], tensor.shape, base.shape)
    return not torch.equal(tensor.to(base.dtype), base.detach())


def base_params(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    params: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for pname, p in module.named_parameters(recurse=False):
            params[f"{name}.{pname}"] = p
    return params


def check_trainable_tokens(module: str, tensor: torch.Tensor, modules: dict, config: dict) -> bool:
    base = modules.get(module)
    if base is None or getattr(base, "weight", None) is None or base.weight.dim() != 2:
        raise InvalidAdapterError(
            f"trainable tokens for module {module!r}, which is not an embedding of the base model"
        )
    indices = config.get("trainable_token_indices")
    if isinstance(indices, dict):
        indices = next((v for k, v in indices.items() if module == k or module.endswith("." + k)), None)
    if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise InvalidAdapterError(f"{CONFIG_NAME}: trainable_token_indices for {module!r} are missing or invalid")
    weight = base.weight.detach()
    if any(i < 0 or i >= weight.shape[0] for i in indices):
        raise InvalidAdapterError(
            f"trainable_token_indices for {module!r} are outside the vocabulary (size {weight.shape[0]})"
        )
    if tuple(tensor.shape) != (len(indices), weight.shape[1]):
        raise shape_error(module, "trainable_tokens_delta", tensor.shape, (len(indices), weight.shape[1]))
    return not torch.equal(tensor.to(weight.dtype), weight[indices])
