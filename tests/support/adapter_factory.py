"""Build tiny PEFT adapters (valid and deliberately broken) for tests.

Everything here is small enough to run in milliseconds on a CPU: a 2-layer Llama with hidden size 64 and adapters of
rank ≤ 8. The passed base model is never mutated: adapters are created on a deep copy.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
from peft import AdaLoraConfig, IA3Config, LoHaConfig, LoKrConfig, LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

KINDS = ("lora", "dora", "adalora", "loha", "lokr", "ia3")
ADAPTER_PARAM_MARKERS = (
    "lora_A",
    "lora_B",
    "lora_E",
    "lora_embedding_A",
    "lora_embedding_B",
    "hada_",
    "lokr_",
    "ia3_l",
)


def tiny_llama(seed: int = 0, hidden_size: int = 64, **overrides) -> LlamaForCausalLM:
    """A random 2-layer Llama: vocab 512, hidden 64, 4 heads (head_dim 16), 2 KV heads, in eval mode."""
    torch.manual_seed(seed)
    kwargs = dict(
        vocab_size=512,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    kwargs.update(overrides)
    return LlamaForCausalLM(LlamaConfig(**kwargs)).eval()


def _config(kind: str, r: int, alpha: float, targets, cfg: dict):
    targets = targets if isinstance(targets, str) else list(targets)
    if kind in ("lora", "dora"):
        return LoraConfig(
            task_type="CAUSAL_LM",
            r=r,
            lora_alpha=alpha,
            target_modules=targets,
            use_dora=kind == "dora",
            lora_dropout=0.0,
            **cfg,
        )
    if kind == "adalora":
        cfg = {"target_r": max(1, r // 2), "total_step": 100, "tinit": 0, "tfinal": 0, **cfg}
        return AdaLoraConfig(
            task_type="CAUSAL_LM", init_r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, **cfg
        )
    if kind == "loha":
        return LoHaConfig(task_type="CAUSAL_LM", r=r, alpha=alpha, target_modules=targets, **cfg)
    if kind == "lokr":
        return LoKrConfig(task_type="CAUSAL_LM", r=r, alpha=alpha, target_modules=targets, **cfg)
    if kind == "ia3":
        cfg = {"feedforward_modules": [], **cfg}
        return IA3Config(task_type="CAUSAL_LM", target_modules=targets, **cfg)
    raise ValueError(f"unknown adapter kind {kind!r}; expected one of {KINDS}")


def _is_zeroable(name: str) -> bool:
    """The factor that, when zero (ones for IA3), makes the module's update vanish."""
    return any(m in name for m in ("lora_B", "lora_embedding_B", "hada_w2_b", "lokr_w2"))


def build_peft_model(
    base,
    kind: str = "lora",
    r: int = 4,
    alpha: float = 8,
    targets=("q_proj", "v_proj"),
    seed: int = 0,
    zero_b: bool = False,
    adapter_name: str = "default",
    **cfg,
):
    """A PeftModel around a deep copy of `base` with non-zero random adapter weights (or zero B when zero_b)."""
    model = copy.deepcopy(base)
    peft_model = get_peft_model(model, _config(kind, r, alpha, targets, cfg), adapter_name=adapter_name)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if not any(m in name for m in ADAPTER_PARAM_MARKERS):
                continue
            if "ia3_l" in name:
                p.copy_(torch.ones_like(p) if zero_b else 1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif zero_b and _is_zeroable(name):
                p.zero_()
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return peft_model.eval()


def make_adapter(
    folder: Path,
    base,
    kind: str = "lora",
    r: int = 4,
    alpha: float = 8,
    targets=("q_proj", "v_proj"),
    seed: int = 0,
    zero_b: bool = False,
    **cfg,
) -> Path:
    """Create an adapter of `kind` (lora, dora, adalora, loha, lokr, ia3) for a copy of `base` and save it to `folder`
    with save_pretrained (adapter_config.json + adapter_model.safetensors). Extra keyword arguments go to the PEFT
    config (e.g. layers_to_transform=[0], rank_pattern={...})."""
    folder = Path(folder)
    build_peft_model(base, kind, r, alpha, targets, seed, zero_b, **cfg).save_pretrained(folder)
    return folder


# ---- broken variants -----------------------------------------------------------------------------------------------


def corrupt_safetensors(folder: Path, mode: str = "garbage") -> Path:
    """Damage adapter_model.safetensors: 'garbage' (random bytes), 'truncate' (cut the data short) or 'header'
    (a header length pointing past the end of the file)."""
    path = Path(folder) / "adapter_model.safetensors"
    data = path.read_bytes()
    if mode == "garbage":
        path.write_bytes(b"\x13\x37" * 64)
    elif mode == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif mode == "header":
        path.write_bytes((10**9).to_bytes(8, "little") + data[8:])
    else:
        raise ValueError(mode)
    return path


def make_wrong_shape_adapter(folder: Path, kind: str = "lora", hidden_size: int = 32, **kw) -> Path:
    """An adapter made for a Llama with a different hidden size (same module names, incompatible shapes)."""
    return make_adapter(folder, tiny_llama(hidden_size=hidden_size), kind=kind, **kw)


def make_pickle_only(folder: Path, base, **kw) -> Path:
    """An adapter whose weights exist only as a pickle (adapter_model.bin written with torch.save)."""
    folder = make_adapter(folder, base, **kw)
    st = folder / "adapter_model.safetensors"
    torch.save(load_file(st), folder / "adapter_model.bin")
    st.unlink()
    return folder


def remove_config(folder: Path) -> Path:
    (Path(folder) / "adapter_config.json").unlink()
    return Path(folder)


def edit_config(folder: Path, **changes) -> Path:
    """Rewrite fields of adapter_config.json (None removes a field)."""
    path = Path(folder) / "adapter_config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))
    return Path(folder)


def copy_adapter(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)
