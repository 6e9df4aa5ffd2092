"""The base model without PEFT's wrappers, sharing every weight: what a decode step of base-only rows runs.

With adapters installed, every targeted layer is a PEFT wrapper whose forward walks its adapters' dicts, checks the
disabled flag and the merge state, then calls the layer it wraps (120 of them per step on the bundled model; measured
2-3% of a 1-16 row step). Swapping the wrappers out of the live model for those steps would show off-worker readers
(profiles, inspection) a module tree that changes under them, so instead this is a second tree, built once, whose
modules are shallow copies that hold the same parameter and buffer objects and, where PEFT wraps a layer, the layer
it wraps. PEFT replaces wrapped layers in the live tree and never touches these copies; it does not write base
weights (nothing here merges adapters), so the view stays exact for the model's lifetime. It is built from the
model as the engine gets it and used only while adapters are installed (plain attributes set on the live modules
later are not seen by their copies)."""

from __future__ import annotations

import copy

import torch

from app.engine.adapter_tensors import original_module, unwrap_model


def base_view(model: torch.nn.Module) -> torch.nn.Module:
    """A module tree that computes what `model` computes with every adapter off, without a copied tensor."""
    return _view(unwrap_model(model))


def _view(module: torch.nn.Module) -> torch.nn.Module:
    module = original_module(module)
    twin = copy.copy(module)  # a new object with a shallow copy of __dict__
    for attr, value in module.__dict__.items():
        if attr.startswith("_") and isinstance(value, (dict, set)):  # parameters, buffers, hooks: own containers
            twin.__dict__[attr] = copy.copy(value)
    children = module._modules.items()
    twin.__dict__["_modules"] = {name: None if child is None else _view(child) for name, child in children}
    return twin
