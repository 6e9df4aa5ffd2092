"""Checkpoints of `tonewatch train-adapter`: the adapter weights, optimizer, step, RNG state and losses, written every
``checkpoint_every`` steps (swapped in atomically) so that ``resume`` continues from the latest one with the same
batches, and the same random numbers, the uninterrupted run would have used."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.training.config import TrainConfig

STATE_FILE = "trainer_state.pt"
WEIGHTS_FILE = "adapter_model.safetensors"


# ---- random state -----------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()  # the legacy tuple: ("MT19937", keys, pos, has_gauss, cached_gaussian)
    assert isinstance(numpy_state, tuple)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": numpy_state[1].tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    if "numpy" in state:
        np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), 624, 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_tuplify(v) for v in value)
    return value


# ---- checkpoints ------------------------------------------------------------------------------------------------


def save_checkpoint(model, optimizer, step: int, losses: list[float], config: TrainConfig) -> Path:
    """Write the checkpoint to a temp folder, then swap it in (a crash mid-write keeps the previous one)."""
    target = config.checkpoint_path
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp), save_embedding_layers=False)
    torch.save(
        {
            "step": step,
            "losses": losses,
            "optimizer": optimizer.state_dict(),
            "rng": _rng_state(),
            "config": config.fingerprint(),
        },
        tmp / STATE_FILE,
    )
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(model, optimizer, config: TrainConfig) -> tuple[int, list[float]] | None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = config.checkpoint_path
    state_file, weights = folder / STATE_FILE, folder / WEIGHTS_FILE
    if not state_file.is_file() or not weights.is_file():
        return None
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    if state.get("config") != config.fingerprint():
        raise ValueError(
            f"checkpoint in {folder} was written with a different training config; delete it or train without --resume"
        )
    device = next(model.parameters()).device
    set_peft_model_state_dict(model, load_file(str(weights), device=str(device)))
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"])
    return int(state["step"]), [float(x) for x in state["losses"]]
