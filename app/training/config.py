"""The training config of `tonewatch train-adapter`: the TrainConfig dataclass (from a YAML file, a dict or the command
line, validated) and the argparse parser whose flags override the config file's fields."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ADAPTER_TYPES = ("lora", "dora", "adalora", "loha", "lokr")
PERSONA_KEYS = ("friendly", "formal", "robotic")
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
QUANTIZE = (None, "nf4")


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
    quantize: str | None = None  # "nf4": train on the 4-bit base (QLoRA, app/training/quantized.py); None: float32

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
        if self.quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {', '.join(map(str, QUANTIZE))}, got {self.quantize!r}")
        if self.quantize and self.type not in ("lora", "dora"):
            raise ValueError("quantize: a 4-bit base trains LoRA or DoRA adapters only")
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


# ---- command line -----------------------------------------------------------------------------------------------


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
    p.add_argument(
        "--quantize",
        choices=["nf4"],
        help="train on the base quantized to 4-bit NF4 (QLoRA; needs bitsandbytes) (default: none, the float32 base)",
    )
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
