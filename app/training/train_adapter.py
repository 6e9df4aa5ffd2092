"""Train a persona adapter (LoRA, DoRA, AdaLoRA, LoHa, LoKr) on the support exchanges: `tonewatch train-adapter`.

The adapter learns one voice (the ``persona`` response key: friendly, formal or robotic) from chat-format data with
the loss on the final assistant turn only (plus its end-of-turn token, so it learns to stop). There is no persona
system prompt by default: served requests carry none, so the adapter alone has to carry the voice.

Deterministic for a given config (seeded torch/random, data sorted by id, per-epoch permutations derived from the
seed). Checkpoints (adapter weights, optimizer, step, RNG state, losses) are written every ``checkpoint_every`` steps
and ``resume`` continues from the latest one with the same batches the uninterrupted run would have used.

Output folder: ``adapter_config.json`` + ``adapter_model.safetensors`` (what the server loads), ``TRAINING_CARD.md``
and ``loss.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.training.data import IGNORE_INDEX, batch_indices, build_examples, collate, data_sha256, load_exchanges

log = logging.getLogger("tonewatch.train")

ADAPTER_TYPES = ("lora", "dora", "adalora", "loha", "lokr")
PERSONA_KEYS = ("friendly", "formal", "robotic")
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
STATE_FILE = "trainer_state.pt"
WEIGHTS_FILE = "adapter_model.safetensors"


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)  # JSONL files of exchanges
    persona: str = "friendly"  # which response key to learn: friendly | formal | robotic
    output: str = ""  # adapter folder to write
    base_model: str = "bundled:smollm2"  # same spec as TONEWATCH_BASE_MODEL
    type: str = "lora"  # lora | dora | adalora | loha | lokr
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    layers: list[int] | None = None  # layer indices to adapt (layers_to_transform); None = all
    lr: float = 5e-4
    steps: int = 150
    batch_size: int = 8
    max_len: int = 192
    seed: int = 13
    system_prompt: str | None = None  # none: served requests carry no persona prompt either
    warmup_steps: int | None = None  # default: 10% of steps
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = 50  # 0 disables checkpoints
    checkpoint_dir: str | None = None  # default: <output>/checkpoint
    resume: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    name: str | None = None  # for the training card; default: the output folder's name
    head_mask: str | None = None  # JSON head selection (app/training/head_mask.py): LoRA trains only those heads

    # ---- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config field(s): {', '.join(unknown)}")
        return cls(**data).validated()

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a training config must be a YAML mapping")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    def validated(self) -> TrainConfig:
        self.data = _as_list(self.data)
        self.target_modules = _as_list(self.target_modules) or list(DEFAULT_TARGETS)
        if self.layers is not None:
            self.layers = [int(x) for x in _as_list(self.layers)] or None
        self.type = str(self.type).lower()
        if self.type not in ADAPTER_TYPES:
            raise ValueError(f"type must be one of {', '.join(ADAPTER_TYPES)}, got {self.type!r}")
        if not self.data:
            raise ValueError("data: at least one JSONL file is required")
        if not self.output:
            raise ValueError("output: the adapter folder is required")
        if self.rank < 1 or self.steps < 1 or self.batch_size < 1 or self.max_len < 8:
            raise ValueError("rank, steps and batch_size must be >= 1 and max_len >= 8")
        if not self.lr > 0:
            raise ValueError("lr must be > 0")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must be >= 0")
        if self.head_mask is not None and self.type != "lora":
            raise ValueError("head_mask: only plain LoRA adapters can be restricted to heads")
        return self

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else max(1, self.steps // 10)

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else Path(self.output) / "checkpoint"

    @property
    def adapter_name(self) -> str:
        return self.name or Path(self.output).name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> dict[str, Any]:
        """Fields that must match for a checkpoint to be resumed."""
        skip = {"resume", "checkpoint_every", "checkpoint_dir", "device", "output", "name"}
        return {k: v for k, v in self.to_dict().items() if k not in skip}


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


# ---- model ------------------------------------------------------------------------------------------------------


def peft_config(config: TrainConfig):
    from peft import AdaLoraConfig, LoHaConfig, LoKrConfig, LoraConfig

    common: dict[str, Any] = {"task_type": "CAUSAL_LM", "target_modules": list(config.target_modules)}
    if config.layers is not None:
        common["layers_to_transform"] = list(config.layers)
    # the alpha arguments below: peft annotates them as int, but alpha is only a scale (alpha / r), and a float works
    if config.type in ("lora", "dora"):
        return LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,  # type: ignore[arg-type]
            lora_dropout=config.dropout,
            use_dora=config.type == "dora",
            **common,
        )
    if config.type == "adalora":
        return AdaLoraConfig(
            init_r=config.rank,
            target_r=max(1, config.rank // 2),
            lora_alpha=config.alpha,  # type: ignore[arg-type]
            lora_dropout=config.dropout,
            total_step=config.steps,
            tinit=config.steps // 10,
            tfinal=config.steps // 5,
            **common,
        )
    if config.type == "loha":
        return LoHaConfig(
            r=config.rank,
            alpha=config.alpha,  # type: ignore[arg-type]
            module_dropout=config.dropout,
            **common,
        )
    return LoKrConfig(
        r=config.rank,
        alpha=config.alpha,  # type: ignore[arg-type]
        module_dropout=config.dropout,
        **common,
    )


def load_base(config: TrainConfig, device: str):
    from app.config import Settings
    from app.engine.provision import load_base_model, resolve_base_model

    source = resolve_base_model(config.base_model)
    model, tokenizer = load_base_model(source, Settings().model_cache_dir, device, "float32")
    return model, tokenizer, source.name


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to ``lr`` over the warmup steps, then linear decay to 0 at ``steps`` (0-based step)."""
    warmup = config.warmup
    if step < warmup:
        return config.lr * (step + 1) / warmup
    remaining = max(1, config.steps - warmup)
    return config.lr * max(0.0, (config.steps - step) / remaining)


def causal_lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions; the output head runs only on those positions
    (on a 49k vocabulary that is a good part of a CPU step), same value as ``model(**batch).loss``."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = inner.get_decoder(), inner.get_output_embeddings()
    if decoder is None or head is None or getattr(inner.config, "final_logit_softcapping", None):
        return model(**batch).loss
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    logits = head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


def _seed_everything(seed: int) -> None:
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


# ---- training ---------------------------------------------------------------------------------------------------


def train_adapter(config: TrainConfig) -> Path:
    """Train and write the adapter folder; returns its path."""
    from peft import get_peft_model
    from tqdm import tqdm

    from app.engine.provision import pick_device

    config.validated()
    started, cpu_started = time.perf_counter(), time.process_time()
    device = pick_device(config.device)
    _seed_everything(config.seed)
    model, tokenizer, base_name = load_base(config, device)

    exchanges = load_exchanges(config.data)
    examples, skipped = build_examples(
        tokenizer, exchanges, config.persona, max_len=config.max_len, system_prompt=config.system_prompt
    )
    log.info("%d examples (%d skipped: longer than max_len)", len(examples), skipped)

    _seed_everything(config.seed)  # adapter init depends only on the seed
    model = get_peft_model(model, peft_config(config))
    model.peft_config["default"].base_model_name_or_path = base_name
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = allocated_params = sum(p.numel() for p in params)
    if config.head_mask:
        n_params = _mask_heads(model, config)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    start_step = 0
    losses: list[float] = []
    if config.resume:
        restored = load_checkpoint(model, optimizer, config)
        if restored is not None:
            start_step, losses = restored
            log.info("resumed from %s at step %d", config.checkpoint_path, start_step)
        else:
            log.info("no checkpoint in %s; starting from scratch", config.checkpoint_path)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    is_adalora = config.type == "adalora"
    bar = tqdm(
        total=config.steps,
        initial=start_step,
        desc=f"train {config.adapter_name}",
        unit="step",
        disable=False,
        mininterval=5.0,
    )
    for step in range(start_step, config.steps):
        batch = collate(
            [examples[i] for i in batch_indices(len(examples), config.batch_size, config.seed, step)], pad_id
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = causal_lm_loss(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower lr")
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        if is_adalora:
            model.base_model.update_and_allocate(step)
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", avg10=f"{np.mean(losses[-10:]):.3f}", lr=f"{lr:.2e}")
        bar.update(1)
        done = step + 1
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.steps:
            save_checkpoint(model, optimizer, done, losses, config)
    bar.close()

    duration = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started  # wall time on a shared machine overstates the cost
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(str(output), safe_serialization=True, save_embedding_layers=False)
    (output / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template; TRAINING_CARD.md replaces it
    os.chmod(output / WEIGHTS_FILE, 0o644)  # safetensors writes 0600; the server may run as another user
    _plot_loss(losses, output / "loss.png", config.adapter_name)
    size = (output / WEIGHTS_FILE).stat().st_size
    summary = {
        "name": config.adapter_name,
        "base_model": base_name,
        "examples": len(examples),
        "skipped": skipped,
        "target_tokens": sum(e.n_target for e in examples),
        "data_sha256": data_sha256(config.data),
        "first_loss": losses[0] if losses else None,
        "final_loss": float(np.mean(losses[-10:])) if losses else None,
        "mean_loss": float(np.mean(losses)) if losses else None,
        "duration_s": round(duration, 1),
        "cpu_s": round(cpu_seconds, 1),
        "steps": config.steps,
        "torch_threads": torch.get_num_threads(),
        "resumed_from_step": start_step,
        "trainable_params": n_params,
        "allocated_params": allocated_params,
        "weights_bytes": size,
        "device": device,
        "torch": torch.__version__,
    }
    _write_card(output / "TRAINING_CARD.md", config, summary)
    (output / "training_summary.json").write_text(
        json.dumps({**summary, "config": config.to_dict(), "losses": [round(x, 5) for x in losses]}, indent=1)
    )
    log.info("wrote %s (%d bytes, final loss %.4f, %.0f s)", output, size, summary["final_loss"] or 0.0, duration)
    return output


def _mask_heads(model, config: TrainConfig) -> int:
    """Restrict LoRA to the selected heads (zeroed + gradient-masked elsewhere); returns the entries that train."""
    from app.training.head_mask import HeadSelection, apply_head_mask

    assert config.head_mask is not None  # called only when a head selection is configured
    selection = HeadSelection.load(config.head_mask)
    if sorted(config.layers or []) != selection.layers:
        raise ValueError(f"layers must be the head selection's layers {selection.layers}, got {config.layers}")
    text = model.get_base_model().config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    counts = apply_head_mask(model, selection, head_dim)
    log.info("head mask %s: %d of %d LoRA entries train", config.head_mask, counts["trainable"], counts["allocated"])
    return counts["trainable"]


def _plot_loss(losses: list[float], path: Path, title: str) -> None:
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


def _write_card(path: Path, config: TrainConfig, s: dict[str, Any]) -> None:
    cfg_rows = "\n".join(
        f"| {k} | {_fmt(v) if not isinstance(v, list) else ', '.join(map(str, v))} |"
        for k, v in config.to_dict().items()
    )
    minutes = s["duration_s"] / 60
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
| duration | {s["duration_s"]} s ({minutes:.1f} min) on {s["device"]}, torch {s["torch"]} |
| resumed from step | {s["resumed_from_step"]} |

![loss](loss.png)

## Config

| field | value |
|---|---|
{cfg_rows}
"""
    path.write_text(text)


# ---- CLI --------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Every flag overrides the --config file's field of the same name, which overrides TrainConfig's default: the
    flags themselves default to None ("not given"), so each help names the default that applies."""
    from app.cli import DefaultsHelpFormatter

    d = TrainConfig.__dataclass_fields__

    def default(name: str) -> str:
        spec = d[name]
        value = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        return f"(default: {shown})"

    p = argparse.ArgumentParser(
        prog="tonewatch train-adapter",
        description="Train a persona adapter. Flags override the --config file's fields, which override the defaults.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--config", help="YAML training config; flags override its fields (default: none)")
    p.add_argument("--base-model", help=f"bundled:smollm2, an HF folder or a .gguf file {default('base_model')}")
    p.add_argument("--data", help="comma-separated JSONL files of exchanges (required here or in --config)")
    p.add_argument("--persona", choices=PERSONA_KEYS, help=f"response key to learn {default('persona')}")
    p.add_argument("--output", help="adapter folder to write (required here or in --config)")
    p.add_argument("--type", choices=ADAPTER_TYPES, help=f"adapter type {default('type')}")
    p.add_argument("--rank", type=int, help=f"adapter rank r {default('rank')}")
    p.add_argument("--alpha", type=float, help=f"scaling alpha (the update is scaled by alpha / r) {default('alpha')}")
    p.add_argument("--dropout", type=float, help=f"dropout on the adapter's input {default('dropout')}")
    p.add_argument("--target-modules", help=f"comma-separated module names {default('target_modules')}")
    p.add_argument("--layers", help="comma-separated layer indices to adapt (default: all)")
    p.add_argument("--lr", type=float, help=f"peak learning rate {default('lr')}")
    p.add_argument("--steps", type=int, help=f"optimizer steps {default('steps')}")
    p.add_argument("--batch-size", type=int, help=f"exchanges per step {default('batch_size')}")
    p.add_argument("--max-len", type=int, help=f"tokens per exchange; longer ones are skipped {default('max_len')}")
    p.add_argument("--seed", type=int, help=f"random seed {default('seed')}")
    p.add_argument("--system-prompt", help="train with this system prompt (default: none, like served requests)")
    p.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default: 10%% of --steps)")
    p.add_argument("--weight-decay", type=float, help=f"AdamW weight decay {default('weight_decay')}")
    p.add_argument("--grad-clip", type=float, help=f"gradient norm clip {default('grad_clip')}")
    p.add_argument(
        "--checkpoint-every", type=int, help=f"steps between checkpoints; 0 disables them {default('checkpoint_every')}"
    )
    p.add_argument("--checkpoint-dir", help="where checkpoints go (default: <output>/checkpoint)")
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"continue from the checkpoint if there is one {default('resume')}",
    )
    p.add_argument("--device", help=f"auto | cpu | cuda | cuda:N {default('device')}")
    p.add_argument("--name", help="adapter name for the training card (default: output folder name)")
    p.add_argument(
        "--head-mask", help="JSON head selection: train LoRA only on those attention heads (default: all heads)"
    )
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    if args.config:
        return TrainConfig.from_yaml(args.config, **overrides)
    return TrainConfig.from_dict(overrides)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = train_adapter(config)
    summary = json.loads((out / "training_summary.json").read_text())
    print(json.dumps({k: summary[k] for k in ("name", "examples", "final_loss", "duration_s", "weights_bytes")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
