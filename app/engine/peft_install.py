"""Installing and removing a PEFT adapter in a live model (called by the Engine on its worker thread only).

Kept apart from the registry (which validates and bookkeeps) and from the worker loop (which owns the model and
its routing state): these functions only transform a model and leave it as it was when they fail."""

from __future__ import annotations

from typing import Any

from app.engine.adapter_files import AdapterSpec
from app.engine.adapter_paths import InvalidAdapterError, names_adapter


def install(model: Any, spec: AdapterSpec, device: str) -> tuple[Any, int]:
    """(the model with `spec` added, the adapter's parameter count). A plain model is wrapped in a PeftModel; on
    any failure the adapter is removed again (a fresh wrapper is unloaded) and the error raised."""
    from peft import PeftConfig, PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    config = PeftConfig.from_pretrained(str(spec.path))
    config.inference_mode = True
    weights = load_file(str(spec.weights), device=str(device))
    fresh = not isinstance(model, PeftModel)
    wrapped = model
    try:
        if fresh:
            wrapped = PeftModel(model, config, adapter_name=spec.name)
        else:
            wrapped.add_adapter(spec.name, config)
        result = set_peft_model_state_dict(wrapped, weights, adapter_name=spec.name)
        missing = [k for k in getattr(result, "missing_keys", []) if names_adapter(k, spec.name)]
        if missing:
            raise InvalidAdapterError(f"adapter weights are missing {len(missing)} tensors, e.g. {missing[0]}")
        wrapped.eval()
    except Exception as exc:
        if fresh:
            if isinstance(wrapped, PeftModel):
                wrapped.unload()  # strips injected layers from the base it wraps
        elif spec.name in wrapped.peft_config:
            wrapped.delete_adapter(spec.name)
        raise exc
    return wrapped, sum(t.numel() for t in weights.values())


def remove(model: Any, name: str) -> tuple[Any, bool]:
    """(the model without adapter `name`, whether any adapter is left); the last one's removal returns the plain
    base model."""
    if len(model.peft_config) <= 1:
        return model.unload(), False
    model.delete_adapter(name)
    return model, True
