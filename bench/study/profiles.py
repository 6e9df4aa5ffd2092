"""ΔW profiles of the adapter study's adapters, and the head selection of the sparse method.

    python -m bench.study.profiles select PROBE_DIR OUT.json [--layers 10 --q-heads 3 --kv-heads 1]
    python -m bench.study.profiles profile OUT.json NAME=DIR ...

`select` profiles the probe LoRA (app.engine.profile) and keeps the layers/heads with the most ΔW energy
(app.training.head_mask.select_heads). `profile` loads each adapter on a fresh base model, profiles it and
summarises how concentrated its update is: the share of query-head energy (q rows + o columns) in the top 10% of
heads, the share of layer energy in the top third of layers, the mean effective rank of the modules.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def load_profiled(folder: str, name: str) -> tuple[dict[str, Any], int, int]:
    """(ΔW profile, the base model's layer count, its query heads per layer)."""
    from peft import PeftModel

    from app.engine.profile import profile_adapter
    from app.training.config import TrainConfig
    from app.training.loop import load_base

    base, _, _ = load_base(TrainConfig(data=["x"], output="x"), "cpu")
    geometry = base.config.num_hidden_layers, base.config.num_attention_heads
    model = PeftModel.from_pretrained(base, folder, adapter_name=name)
    return profile_adapter(model, name), *geometry


def concentration(profile: dict[str, Any], n_layers: int, n_heads: int) -> dict[str, Any]:
    """Shares over all ``n_layers`` x ``n_heads`` query heads of the model (layers without the adapter count 0)."""
    from app.training.head_mask import head_energy

    layer_sq, q_sq, kv_sq = head_energy(profile)
    heads = np.array([v for layer in range(n_layers) for v in q_sq.get(layer, [0.0] * n_heads)])
    layers = np.array([layer_sq.get(k, 0.0) for k in range(n_layers)])
    ranks = [m["effective_rank"] for m in profile["modules"] if m["frobenius_norm"] > 0]

    def top_share(values: np.ndarray, fraction: float) -> float | None:
        total = float(values.sum())
        if total <= 0:
            return None
        k = max(1, round(fraction * len(values)))
        return float(np.sort(values)[::-1][:k].sum()) / total

    return {
        "frobenius_norm": profile["totals"]["frobenius_norm"],
        "max_head_share": profile["totals"]["max_head_share"],
        "q_heads": len(heads),
        "q_head_energy_top10pct_share": top_share(heads, 0.10),
        "layer_energy_top_third_share": top_share(layers, 1 / 3),
        "effective_rank_mean": float(np.mean(ranks)) if ranks else None,
        "layer_energy": {str(k): layer_sq[k] for k in sorted(layer_sq)},
        "q_head_energy": {str(k): q_sq[k] for k in sorted(q_sq)},
        "kv_head_energy": {str(k): kv_sq[k] for k in sorted(kv_sq)},
    }


def write_sparse_config(template: str, out: str, selection: str, layers: list[int], rank: int) -> None:
    """The sparse method's config: the template's data, steps, seed and lr schedule; LoRA of ``rank`` on the
    selection's layers, masked to its heads."""
    import yaml

    config = yaml.safe_load(Path(template).read_text())
    name = Path(out).stem
    config.update(
        name=name,
        output=f"models/adapters/study/{name}",
        type="lora",
        rank=rank,
        alpha=2 * rank,
        layers=layers,
        head_mask=selection,
        checkpoint_dir=f"bench/results/tmp/study/checkpoints/{name}/checkpoint",
    )
    header = (
        "# Adapter study (issues 15, 28; docs/study.md): head-targeted sparse LoRA, written by bench/study/profiles.py "
        f"select from {template}'s data/steps/seed/lr; only the heads in {selection} train.\n"
    )
    Path(out).write_text(header + yaml.safe_dump(config, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(prog="python -m bench.study.profiles")
    sub = p.add_subparsers(dest="cmd", required=True)
    sel = sub.add_parser("select")
    sel.add_argument("probe")
    sel.add_argument("out")
    sel.add_argument("--layers", type=int, default=10)
    sel.add_argument("--q-heads", type=int, default=3)
    sel.add_argument("--kv-heads", type=int, default=1)
    sel.add_argument("--template", help="study config to copy for the sparse method's config")
    sel.add_argument("--config-out", help="write the sparse method's training config here")
    sel.add_argument("--rank", type=int, default=16)
    prof = sub.add_parser("profile")
    prof.add_argument("out")
    prof.add_argument("adapters", nargs="+", help="NAME=DIR")
    args = p.parse_args(argv)
    if args.cmd == "select":
        from app.training.head_mask import select_heads

        profile, n_layers, n_heads = load_profiled(args.probe, "probe")
        selection = select_heads(profile, args.layers, args.q_heads, args.kv_heads)
        selection.note = f"from the ΔW profile of {args.probe}: " + selection.note
        selection.save(args.out)
        summary = concentration(profile, n_layers, n_heads)
        Path(args.out).with_suffix(".profile.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(selection.to_dict()))
        if args.template and args.config_out:
            write_sparse_config(args.template, args.config_out, args.out, selection.layers, args.rank)
        return 0
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}  # adds to (or replaces) earlier entries
    for spec in args.adapters:
        name, _, folder = spec.partition("=")
        results[name] = concentration(*load_profiled(folder, name))
        print(name, {k: v for k, v in results[name].items() if not isinstance(v, dict)}, flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
