"""QLoRA's base: the model quantized to 4-bit NF4 (bitsandbytes, double quantization, float32 compute) for training
an adapter on top of it. bitsandbytes is optional (`pip install -e '.[study]'`); bitsandbytes 0.50 trains on CPU
through its torch fallback (measured for the adapter study, docs/study.md). The adapter it writes is an ordinary
LoRA file, served on the float base like any other."""

from __future__ import annotations

from pathlib import Path


class QuantizationUnavailable(RuntimeError):
    """bitsandbytes is missing or cannot quantize on this machine."""


def require_bitsandbytes() -> None:
    """Fail before any model is loaded; transformers' own error names no install command."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise QuantizationUnavailable(
            "quantize: nf4 needs bitsandbytes; install it with: .venv/bin/pip install -e '.[study]'"
        ) from exc


def load_nf4_base(folder: Path, device: str):
    """(model, tokenizer) from a safetensors folder, linear layers in NF4, ready for k-bit training."""
    require_bitsandbytes()
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, device_map=device)
    # gradient checkpointing off: a 135M model's activations fit, and recomputation would cost a third more time
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model, tokenizer
