"""The record `tonewatch train-adapter` leaves beside an adapter: ``TRAINING_CARD.md`` (results and config) and
``loss.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.training.config import TrainConfig


def plot_loss(losses: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="step loss")
    if len(losses) >= 10:
        smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
        ax.plot(steps[9:], smooth, lw=1.8, label="mean of 10")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title(f"{title}: training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "none" if value is None else str(value)


def write_card(path: Path, config: TrainConfig, s: dict[str, Any]) -> None:
    cfg_rows = "\n".join(
        f"| {k} | {_fmt(v) if not isinstance(v, list) else ', '.join(map(str, v))} |"
        for k, v in config.to_dict().items()
    )
    minutes = s["duration_s"] / 60
    where = s["device"] + (f" ({s['cpu']})" if s.get("cpu") else "")
    examples = f"{s['examples']} ({s['skipped']} skipped as longer than max_len), {s['target_tokens']} target tokens"
    loss = f"{_fmt(s['first_loss'])} / {_fmt(s['mean_loss'])} / {_fmt(s['final_loss'])}"
    text = f"""# Training card: {s["name"]}

Persona adapter for `{s["base_model"]}` that speaks in the **{config.persona}** support voice without a system
prompt. Trained with `app/training/train_adapter.py` (loss on the final assistant turn and its end-of-turn token).

| result | value |
|---|---|
| adapter type | {config.type} (r={config.rank}, alpha={_fmt(config.alpha)}) |
| trainable parameters (allocated) | {s["trainable_params"]:,} ({s["allocated_params"]:,}) |
| adapter_model.safetensors | {s["weights_bytes"]:,} bytes ({s["weights_bytes"] / 2**20:.2f} MiB) |
| training examples | {examples} |
| data sha256 | `{s["data_sha256"]}` |
| loss: first step / mean / final (mean of last 10 steps) | {loss} |
| duration | {s["duration_s"]} s ({minutes:.1f} min) on {where}, torch {s["torch"]} |
| resumed from step | {s["resumed_from_step"]} |

![loss](loss.png)

## Config

| field | value |
|---|---|
{cfg_rows}
"""
    path.write_text(text)
