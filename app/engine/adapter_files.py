"""Validate a PEFT adapter folder BEFORE any of it touches the served model.

`inspect_adapter` reads only `adapter_config.json` (JSON) and `adapter_model.safetensors` (via `safetensors.safe_open`,
which never executes code). Pickle-based weights (`adapter_model.bin`, `*.pt`, ...) are refused, never unpickled.
Every tensor is checked against the base module it would adapt, exactly the way PEFT would build that module, so a
later `load_adapter` cannot fail halfway with a size mismatch or silently load nothing.

Failures raise `InvalidAdapterError` whose message is meant for a human (the API maps it to 422/400).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import SimpleNamespace
from typing import Any

import torch

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_CONFIG_BYTES = 1 * 2**20
# PEFT keys adapters by name inside module paths and torch ModuleDicts: no "." and no ModuleDict attribute names.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

# Weight-based PEFT methods this server can validate and hot-swap on a causal LM. Prompt-learning methods
# (prompt/prefix/p-tuning) and the exotic tuners are refused with a clear message.
SUPPORTED_PEFT_TYPES = ("LORA", "ADALORA", "LOHA", "LOKR", "IA3")
ALLOWED_TASK_TYPES = (None, "CAUSAL_LM")

# Tensor-name parts per PEFT type (the component that follows the adapted module's name in a saved key).
_PARTS = {
    "LORA": {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"},
    "ADALORA": {"lora_A", "lora_B", "lora_E"},
    "LOHA": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"},
    "LOKR": {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"},
    "IA3": {"ia3_l"},
}
_PEFT_PREFIXES = ("base_model.model.", "base_model.")


class InvalidAdapterError(Exception):
    """The adapter folder cannot be served; str(error) says why, for a human."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


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


# ---- names and paths -------------------------------------------------------------------------------------------------


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidAdapterError(
            f"invalid adapter name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ - "
            "starting with a letter or digit ('.' cannot be used: PEFT keys adapters inside module paths)"
        )
    if hasattr(torch.nn.ModuleDict(), name):
        raise InvalidAdapterError(
            f"invalid adapter name {name!r}: it is reserved by torch/PEFT "
            "(an attribute of the modules that hold adapters); choose another name"
        )
    return name


_DICT_PARTS = {"lora_embedding_A", "lora_embedding_B"}  # ParameterDicts: "...lora_embedding_A.<name>", no suffix


def names_adapter(key: str, name: str) -> bool:
    """True when a PEFT state-dict key belongs to adapter `name`, by position, never by substring ("model" is in
    every key): "<module>.<tuner part>.<name>.<param>", or "<module>.lora_embedding_A.<name>"."""
    parts = key.split(".")
    tuner_parts = set().union(*_PARTS.values())
    if len(parts) >= 3 and parts[-2] == name and parts[-3] in tuner_parts:
        return True
    return len(parts) >= 2 and parts[-1] == name and parts[-2] in _DICT_PARTS


def resolve_inside(root: Path, relative: str) -> Path:
    """Resolve `relative` under `root`, refusing absolute paths, '..' components, symlinks that resolve outside root
    and missing folders. Returns the resolved folder."""
    if not isinstance(relative, str) or not relative.strip():
        raise InvalidAdapterError("adapter path is empty")
    if "\x00" in relative:
        raise InvalidAdapterError("adapter path contains a NUL byte")
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or relative.startswith(("/", "\\", "~")):
        raise InvalidAdapterError(f"adapter path {relative!r} must be relative to the adapter root, not absolute")
    if ".." in posix.parts or ".." in windows.parts:
        raise InvalidAdapterError(f"adapter path {relative!r} must not contain '..'")
    root_path = Path(root)
    if not root_path.is_dir():
        raise InvalidAdapterError(f"adapter root {str(root_path)!r} does not exist")
    root_resolved = root_path.resolve()
    try:
        target = (root_resolved / relative).resolve()
    except (OSError, RuntimeError) as e:  # symlink loops
        raise InvalidAdapterError(f"adapter path {relative!r} cannot be resolved: {e}") from e
    if not target.is_relative_to(root_resolved):
        raise InvalidAdapterError(f"adapter path {relative!r} resolves outside the adapter root (symlink escape)")
    if not target.exists():
        raise InvalidAdapterError(f"adapter folder {relative!r} does not exist under the adapter root")
    if not target.is_dir():
        raise InvalidAdapterError(f"adapter path {relative!r} is not a folder")
    return target


def _file_inside(root_resolved: Path, folder: Path, filename: str, relative: str) -> Path | None:
    path = folder / filename
    if not path.exists() and not path.is_symlink():
        return None
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as e:  # symlink loops
        raise InvalidAdapterError(f"{relative}/{filename} cannot be resolved: {e}") from e
    if not resolved.is_relative_to(root_resolved):
        raise InvalidAdapterError(f"{relative}/{filename} is a symlink that resolves outside the adapter root")
    if not resolved.is_file():
        raise InvalidAdapterError(f"{relative}/{filename} is not a regular file")
    return resolved


# ---- the base model's modules --------------------------------------------------------------------------------------


def _unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PeftModel / tuner (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        return get_base()
    return model


def base_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """name → original module, as PEFT sees names on the un-adapted model ('model.layers.0.self_attn.q_proj'). PEFT
    wrappers (LoRA layers, modules_to_save, trainable tokens) are collapsed to the module they wrap and their internals
    (lora_A.<adapter>, base_layer, ...) are dropped."""
    inner = _unwrap_model(model)
    out: dict[str, torch.nn.Module] = {}
    skip: list[str] = []
    for name, raw in inner.named_modules():
        if not name or any(name.startswith(p) for p in skip):
            continue
        module = _original(raw)
        if module is not None:
            out[name] = module
        if module is not raw:  # a PEFT wrapper: its children are adapter internals
            skip.append(name + ".")
    return out


def _original(module: torch.nn.Module | None) -> torch.nn.Module | None:
    """The module a PEFT wrapper (LoRA/LoHa/... layer, modules_to_save, trainable tokens) stands in for."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    if isinstance(module, AuxiliaryTrainingWrapper):
        module = module.original_module
    if isinstance(module, BaseTunerLayer):
        module = module.get_base_layer()
    return module


def _features(module: torch.nn.Module) -> tuple[int, int, str] | None:
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


# ---- config ----------------------------------------------------------------------------------------------------------


def _read_config(path: Path | None, relative: str) -> dict:
    if path is None:
        raise InvalidAdapterError(f"{CONFIG_NAME} is missing in {relative!r}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InvalidAdapterError(f"{CONFIG_NAME} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidAdapterError(f"{CONFIG_NAME} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise InvalidAdapterError(f"{CONFIG_NAME} must contain a JSON object")
    return config


def _positive_int(config: dict, key: str, *, allow_zero: bool = False) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise InvalidAdapterError(
            f"{CONFIG_NAME}: {key} must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}"
        )
    return value


def _number(config: dict, key: str, default: float | None = None) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidAdapterError(f"{CONFIG_NAME}: {key} must be a finite number, got {value!r}")
    return float(value)


def _pattern(config: dict, key: str) -> dict:
    value = config.get(key) or {}
    if not isinstance(value, dict):
        raise InvalidAdapterError(f"{CONFIG_NAME}: {key} must be an object")
    return value


def _pattern_value(pattern: dict, module: str, default):
    from peft.utils.other import get_pattern_key

    if not pattern:
        return default
    try:
        key = get_pattern_key(list(pattern.keys()), module)
    except re.error as e:
        raise InvalidAdapterError(f"{CONFIG_NAME}: invalid pattern in rank/alpha pattern: {e}") from e
    return pattern.get(key, default)


def _lora_variants(config: dict) -> list[str]:
    """LoRA variants other than DoRA that the config enables, read from PEFT's own LoraConfig field metadata."""
    import dataclasses

    from peft import LoraConfig

    found = []
    for f in dataclasses.fields(LoraConfig):
        value = config.get(f.name)
        if f.metadata.get("is_lora_variant") and f.name != "use_dora" and value:
            found.append(f.name)
        elif isinstance(value, str) and value in (f.metadata.get("lora_variants") or ()):
            found.append(f"{f.name}={value}")
    return found


def _rank_and_alpha(peft_type: str, config: dict) -> tuple[int | None, float | None]:
    if peft_type == "IA3":
        return None, None
    if peft_type == "ADALORA":
        rank = _positive_int(config, "init_r") if "init_r" in config else _positive_int(config, "r")
        return rank, _number(config, "lora_alpha", 8)
    rank = _positive_int(config, "r")
    for key, value in _pattern(config, "rank_pattern").items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidAdapterError(f"{CONFIG_NAME}: rank_pattern[{key!r}] must be a positive integer")
        rank = max(rank, value)
    alpha = _number(config, "lora_alpha" if peft_type == "LORA" else "alpha", 8)
    return rank, alpha


# ---- target modules --------------------------------------------------------------------------------------------------


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


def _resolve_targets(config: dict, modules: dict[str, torch.nn.Module], model: torch.nn.Module) -> tuple[set, list]:
    """(names of the base modules PEFT would adapt, target_modules as a list for the spec)."""
    targets = config.get("target_modules")
    if targets is None or targets == [] or targets == "":
        raise InvalidAdapterError(f"{CONFIG_NAME}: target_modules is missing")
    if isinstance(targets, str) and targets.lower() == "all-linear":
        out_emb = None
        get_out = getattr(_unwrap_model(model), "get_output_embeddings", None)
        if callable(get_out):
            out_emb = _original(get_out())
        linear = {
            n
            for n, m in modules.items()
            if _features(m) is not None and _features(m)[2] != "embedding" and m is not out_emb
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
        if _features(modules[name]) is None:
            raise InvalidAdapterError(
                f"target module {name!r} is a {type(modules[name]).__name__}; only Linear, Conv1D and Embedding "
                "layers can be adapted"
            )
    return matched, listed


def _name_matches_list(name: str, entries) -> bool:
    if isinstance(entries, str):
        return re.fullmatch(entries, name) is not None
    return any(name == e or name.endswith("." + e) for e in entries or [])


# ---- weights ---------------------------------------------------------------------------------------------------------


def _strip_prefix(key: str) -> str:
    for prefix in _PEFT_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _split_key(key: str, parts: set[str]) -> tuple[str, str] | None:
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


def _open_weights(path: Path) -> dict[str, torch.Tensor]:
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


def _shape_error(module: str, part: str, got, expected) -> InvalidAdapterError:
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
        raise _shape_error(module, part, t.shape, expected)
    return t


def _nonzero(t: torch.Tensor) -> bool:
    return bool(t.any())


def _check_lora(
    module: str, group: dict, base: torch.nn.Module, feats, config: dict, dora: bool, max_rank: int
) -> bool:
    in_f, out_f, layer_kind = feats
    r = _pattern_value(_pattern(config, "rank_pattern"), module, config["r"])
    alpha = _pattern_value(_pattern(config, "alpha_pattern"), module, config.get("lora_alpha", 8))
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
            w = base.weight.detach().float()
            w = w.T if layer_kind in ("conv1d", "embedding") else w
            changes = not torch.allclose(mag.float(), torch.linalg.norm(w, dim=1), rtol=1e-4, atol=1e-6)
    elif "lora_magnitude_vector" in group:
        raise InvalidAdapterError(f"module {module!r} has a DoRA magnitude vector but use_dora is not set")
    return changes


def _check_adalora(module: str, group: dict, feats, config: dict, rank_limit: int, rank_pattern: dict) -> bool:
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


def _check_loha(module: str, group: dict, feats, config: dict, max_rank: int) -> bool:
    in_f, out_f, layer_kind = feats
    if layer_kind == "embedding":
        raise InvalidAdapterError(f"LoHa cannot adapt embedding module {module!r}")
    r = _pattern_value(_pattern(config, "rank_pattern"), module, config["r"])
    alpha = _pattern_value(_pattern(config, "alpha_pattern"), module, config.get("alpha", 8))
    if r > max_rank:
        raise InvalidAdapterError(f"module {module!r} has rank {r}, above the limit of {max_rank}")
    if {"hada_t1", "hada_t2"} & set(group):
        raise InvalidAdapterError(f"module {module!r} has convolution (CP) factors but is a {layer_kind} layer")
    _require(module, group, "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
    expected = {"hada_w1_a": (out_f, r), "hada_w1_b": (r, in_f), "hada_w2_a": (out_f, r), "hada_w2_b": (r, in_f)}
    factors = [_check_shape(module, group, part, shape) for part, shape in expected.items()]
    return all(_nonzero(f) for f in factors) and alpha != 0


def _check_lokr(module: str, group: dict, feats, config: dict, max_rank: int) -> bool:
    from peft.tuners.lokr.layer import factorization

    in_f, out_f, layer_kind = feats
    if layer_kind == "embedding":
        raise InvalidAdapterError(f"LoKr cannot adapt embedding module {module!r}")
    r = _pattern_value(_pattern(config, "rank_pattern"), module, config["r"])
    alpha = _pattern_value(_pattern(config, "alpha_pattern"), module, config.get("alpha", 8))
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


def _check_ia3(module: str, group: dict, feats, config: dict) -> bool:
    in_f, out_f, layer_kind = feats
    if layer_kind == "embedding":
        raise InvalidAdapterError(f"IA3 cannot adapt embedding module {module!r}")
    _require(module, group, "ia3_l")
    ff = config.get("feedforward_modules") or []
    is_ff = re.fullmatch(ff, module) is not None if isinstance(ff, str) else any(module.endswith(f) for f in ff)
    t = _check_shape(module, group, "ia3_l", (1, in_f) if is_ff else (out_f, 1))
    return not bool(torch.all(t == 1))


def _check_full_param(key: str, tensor: torch.Tensor, params: dict[str, torch.Tensor], owner: str) -> bool:
    """A saved full parameter (modules_to_save copy or a base weight PEFT saved alongside). Returns whether it differs
    from the base model's parameter."""
    base = params.get(key)
    if base is None:
        raise InvalidAdapterError(f"tensor {key!r} ({owner}) does not match any parameter of the base model")
    if tuple(tensor.shape) != tuple(base.shape):
        raise _shape_error(key.rsplit(".", 1)[0], key.rsplit(".", 1)[-1], tensor.shape, base.shape)
    return not torch.equal(tensor.to(base.dtype), base.detach())


def _base_params(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    params = {}
    for name, module in modules.items():
        for pname, p in module.named_parameters(recurse=False):
            params[f"{name}.{pname}"] = p
    return params


def _folder_size(path: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for fn in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, fn)).st_size
            except OSError:
                pass
    return total


# ---- the entry point -------------------------------------------------------------------------------------------------


def inspect_adapter(
    root: Path, relative: str, name: str, base_model: torch.nn.Module, max_rank: int = 64, max_bytes: int = 64 * 2**20
) -> AdapterSpec:
    """Check everything about an adapter folder that can go wrong, without modifying `base_model` (a transformers
    model or a PeftModel wrapping it). Raises InvalidAdapterError with a human-readable reason."""
    validate_name(name)
    folder = resolve_inside(root, relative)
    root_resolved = Path(root).resolve()

    config_path = _file_inside(root_resolved, folder, CONFIG_NAME, relative)
    config = _read_config(config_path, relative)

    peft_type = config.get("peft_type")
    if not isinstance(peft_type, str) or not peft_type:
        raise InvalidAdapterError(f"{CONFIG_NAME}: peft_type is missing")
    peft_type = peft_type.upper()
    if peft_type not in SUPPORTED_PEFT_TYPES:
        raise InvalidAdapterError(f"unsupported peft_type {peft_type!r}; supported: {', '.join(SUPPORTED_PEFT_TYPES)}")
    task_type = config.get("task_type")
    if task_type not in ALLOWED_TASK_TYPES:
        raise InvalidAdapterError(f"task_type {task_type!r} is not a causal-LM adapter (expected CAUSAL_LM or none)")

    weights = _file_inside(root_resolved, folder, WEIGHTS_NAME, relative)
    if weights is None:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise InvalidAdapterError(
                f"pickle weights are not loaded; convert to safetensors (found {', '.join(pickles)}, "
                f"need {WEIGHTS_NAME})"
            )
        raise InvalidAdapterError(f"{WEIGHTS_NAME} is missing in {relative!r}")

    size = config_path.stat().st_size + weights.stat().st_size
    if size > max_bytes:
        raise InvalidAdapterError(f"adapter is {size} bytes, above the limit of {max_bytes} bytes")

    rank, alpha = _rank_and_alpha(peft_type, config)
    if rank is not None and rank > max_rank:
        raise InvalidAdapterError(f"adapter rank {rank} is above the limit of {max_rank}")
    use_dora = bool(config.get("use_dora")) and peft_type == "LORA"
    if peft_type == "LORA":
        if config.get("lora_bias"):
            raise InvalidAdapterError("LoRA adapters with lora_bias=True are not supported")
        variants = _lora_variants(config)
        if variants:
            raise InvalidAdapterError(
                f"LoRA variant(s) {', '.join(variants)} are not supported (plain LoRA and DoRA are)"
            )
    kind = "dora" if use_dora else peft_type.lower()

    modules = base_modules(base_model)
    targeted, target_list = _resolve_targets(config, modules, base_model)

    tensors = _open_weights(weights)
    if not tensors:
        raise InvalidAdapterError("adapter contains no weights: adapter would not change the model's output")

    # group the tensors by the module they adapt
    parts = _PARTS[peft_type]
    groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    others: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        split = _split_key(_strip_prefix(key), parts)
        if split is None:
            others[_strip_prefix(key)] = tensor
            continue
        module, part = split
        if part in groups[module]:
            raise InvalidAdapterError(f"duplicate tensor {part} for module {module!r}")
        groups[module][part] = tensor

    adalora_pattern: dict[str, int] = {}
    if peft_type == "ADALORA":
        for key, mask in _pattern(config, "rank_pattern").items():
            if not isinstance(mask, list):
                raise InvalidAdapterError(f"{CONFIG_NAME}: AdaLoRA rank_pattern[{key!r}] must be a list")
            comps = key.split(".")
            module_key = ".".join(comps[:-2] if len(comps) > 2 and comps[-2] in _PARTS["ADALORA"] else comps[:-1])
            adalora_pattern[module_key] = sum(bool(x) for x in mask)

    changed: list[str] = []
    for module in sorted(groups):
        if module not in modules:
            raise InvalidAdapterError(f"weights for module {module!r}, which does not exist in the base model")
        if module not in targeted:
            raise InvalidAdapterError(f"weights for module {module!r}, which target_modules does not select")
        feats = _features(modules[module])
        group = groups[module]
        if peft_type == "LORA":
            effect = _check_lora(module, group, modules[module], feats, config, use_dora, max_rank)
        elif peft_type == "ADALORA":
            effect = _check_adalora(module, group, feats, config, rank, adalora_pattern)
        elif peft_type == "LOHA":
            effect = _check_loha(module, group, feats, config, max_rank)
        elif peft_type == "LOKR":
            effect = _check_lokr(module, group, feats, config, max_rank)
        else:
            effect = _check_ia3(module, group, feats, config)
        if effect:
            changed.append(module)

    missing = sorted(targeted - set(groups))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InvalidAdapterError(f"missing weights for targeted module(s): {shown}")

    # full tensors outside the adapter factors: modules_to_save copies, trainable tokens, saved base weights
    params = _base_params(modules)
    to_save = config.get("modules_to_save") or []
    for key, tensor in sorted(others.items()):
        module, _, pname = key.rpartition(".")
        if module.endswith(".token_adapter") and pname == "trainable_tokens_delta":
            if _check_trainable_tokens(module[: -len(".token_adapter")], tensor, modules, config):
                changed.append(module)
            continue
        module = re.sub(r"\.modules_to_save\.[^.]+$", "", module)
        if module and _name_matches_list(module, to_save):
            if _check_full_param(f"{module}.{pname}", tensor, params, "modules_to_save"):
                changed.append(module)
            continue
        base_key = key.replace(".base_layer.", ".")
        if base_key in params or key in params:
            # PEFT saved a base weight (e.g. save_embedding_layers, bias="all"): loading it would overwrite the shared
            # base model for every request, so only identical copies are acceptable.
            if _check_full_param(base_key if base_key in params else key, tensor, params, "base weight"):
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


def _check_trainable_tokens(module: str, tensor: torch.Tensor, modules: dict, config: dict) -> bool:
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
        raise _shape_error(module, "trainable_tokens_delta", tensor.shape, (len(indices), weight.shape[1]))
    return not torch.equal(tensor.to(weight.dtype), weight[indices])
