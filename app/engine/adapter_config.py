"""adapter_config.json semantics: supported types, ranks and alphas (with per-module patterns), LoRA variants."""

from __future__ import annotations

import math
import re

from app.engine.adapter_paths import CONFIG_NAME, InvalidAdapterError

# Weight-based PEFT methods this server can validate and hot-swap on a causal LM. Prompt-learning methods
# (prompt/prefix/p-tuning) and the exotic tuners are refused with a clear message.
SUPPORTED_PEFT_TYPES = ("LORA", "ADALORA", "LOHA", "LOKR", "IA3")


ALLOWED_TASK_TYPES = (None, "CAUSAL_LM")


def positive_int(config: dict, key: str, *, allow_zero: bool = False) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise InvalidAdapterError(
            f"{CONFIG_NAME}: {key} must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}"
        )
    return value


def number(config: dict, key: str, default: float | None = None) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidAdapterError(f"{CONFIG_NAME}: {key} must be a finite number, got {value!r}")
    return float(value)


def pattern(config: dict, key: str) -> dict:
    value = config.get(key) or {}
    if not isinstance(value, dict):
        raise InvalidAdapterError(f"{CONFIG_NAME}: {key} must be an object")
    return value


def pattern_value(pattern: dict, module: str, default):
    from peft.utils.other import get_pattern_key

    if not pattern:
        return default
    try:
        key = get_pattern_key(list(pattern.keys()), module)
    except re.error as e:
        raise InvalidAdapterError(f"{CONFIG_NAME}: invalid pattern in rank/alpha pattern: {e}") from e
    return pattern.get(key, default)


def lora_variants(config: dict) -> list[str]:
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


def rank_and_alpha(peft_type: str, config: dict) -> tuple[int | None, float | None]:
    if peft_type == "IA3":
        return None, None
    if peft_type == "ADALORA":
        rank = positive_int(config, "init_r") if "init_r" in config else positive_int(config, "r")
        return rank, number(config, "lora_alpha", 8)
    rank = positive_int(config, "r")
    for key, value in pattern(config, "rank_pattern").items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidAdapterError(f"{CONFIG_NAME}: rank_pattern[{key!r}] must be a positive integer")
        rank = max(rank, value)
    alpha = number(config, "lora_alpha" if peft_type == "LORA" else "alpha", 8)
    return rank, alpha
