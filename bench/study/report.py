"""Build the adapter study's report (bench/results/study/report.{md,json} + plots) from what the study wrote:

* each adapter's training_summary.json (train-adapter),
* the stress-suite report (tonewatch eval --suite stress ... --out bench/results/study/stress),
* the ΔW profiles (python -m bench.study.profiles profile bench/results/study/profiles.json ...).

    python -m bench.study.report [--methods name=path,...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from app.evaluation.stress_report import headline_rows

ADAPTER_ROOT = Path("models/adapters")
OUT = Path("bench/results/study")
METHODS = {
    "base": None,
    "support-friendly": "support-friendly",
    "lora-r4": "study/lora-r4",
    "lora-r16": "study/lora-r16",
    "dora-r8": "study/dora-r8",
    "adalora-r8": "study/adalora-r8",
    "sparse-heads": "study/sparse-heads",
}


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def merged_stress(folder: Path) -> dict[str, Any]:
    """The stress runs under ``folder`` (one report.json per sub-folder, same suite settings) as one report."""
    merged: dict[str, Any] = {"meta": {}, "adapters": {}, "runs": []}
    for path in sorted(folder.glob("*/report.json")):
        run = json.loads(path.read_text())
        meta = {k: v for k, v in run["meta"].items() if k != "created"}
        if merged["meta"] and any(merged["meta"].get(k) != v for k, v in meta.items()):
            raise ValueError(f"{path}: stress settings differ from the other runs")
        merged["meta"] = meta
        merged["adapters"].update(run["adapters"])
        merged["runs"].append({"folder": str(path.parent), "created": run["meta"]["created"]})
    return merged


def method_entry(name: str, path: str | None, stress: dict[str, Any], profiles: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "peft_type": None, "path": path, "trainable_params": 0, "rank": None}
    if path is not None:
        folder = ADAPTER_ROOT / path
        config = _json(folder / "adapter_config.json") or {}
        summary = _json(folder / "training_summary.json") or {}
        train_config = summary.get("config", {})
        peft_type = config.get("peft_type")
        entry.update(
            peft_type=("DORA" if config.get("use_dora") else peft_type),
            trainable_params=summary.get("trainable_params"),
            allocated_params=summary.get("allocated_params", summary.get("trainable_params")),
            rank=config.get("r") or config.get("init_r"),
            target_rank=config.get("target_r"),
            alpha=config.get("lora_alpha"),
            target_modules=sorted(config.get("target_modules") or []),
            layers=config.get("layers_to_transform"),
            head_mask=train_config.get("head_mask"),
            weights_bytes=(folder / "adapter_model.safetensors").stat().st_size,
            train={
                "steps": train_config.get("steps"),
                "batch_size": train_config.get("batch_size"),
                "lr": train_config.get("lr"),
                "seed": train_config.get("seed"),
                "cpu_s": summary.get("cpu_s"),
                "wall_s": summary.get("duration_s"),
                "first_loss": summary.get("first_loss"),
                "final_loss": summary.get("final_loss"),
                "device": summary.get("device"),
            },
        )
    entry["stress"] = stress.get(name)
    entry["profile"] = {k: v for k, v in (profiles.get(name) or {}).items() if not isinstance(v, dict)} or None
    return entry


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(report: dict[str, Any], stress_meta: dict[str, Any]) -> str:
    methods = report["methods"]
    lines = [
        "# Adapter study: does LoRA hold a tone worse than DoRA, AdaLoRA or a head-targeted sparse LoRA?",
        "",
        f"Persona `{report['persona']}`; adapters under `{report['adapter_root']}`. Method and discussion: "
        "[docs/study.md](../../../docs/study.md). Stress suite: "
        f"{stress_meta.get('messages')} single messages + {stress_meta.get('sessions')} sessions "
        f"({stress_meta.get('session_turns')} turns), greedy, max_tokens {stress_meta.get('max_tokens')}, scorer "
        f"`{stress_meta.get('scorer_version')}`, on {stress_meta.get('device')}.",
        "",
        "## Methods and training cost",
        "",
        "| method | type | rank | trainable params | file bytes | steps × batch | seed | CPU s | wall s | "
        "loss first → final |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in methods:
        t = m.get("train") or {}
        rank = m["rank"] if not m.get("target_rank") else f"{m['rank']}→{m['target_rank']}"
        steps = f"{t.get('steps')} × {t.get('batch_size')}" if t else "–"
        lines.append(
            f"| {m['name']} | {m['peft_type'] or 'base'} | {_f(rank)} | {_f(m['trainable_params'])} | "
            f"{_f(m.get('weights_bytes'))} | {steps} | {_f(t.get('seed'))} | {_f(t.get('cpu_s'), 0)} | "
            f"{_f(t.get('wall_s'), 0)} | {_f(t.get('first_loss'), 2)} → {_f(t.get('final_loss'), 2)} |"
        )
    lines += [
        "",
        "CPU s is the training process's CPU time (2 threads); wall s is inflated by other jobs on the shared "
        "2-core machine, which at times paused this one.",
        "",
        "## Stress suite",
        "",
        *headline_rows({m["name"]: m["stress"] for m in methods if m["stress"]}),
        "",
        "![stress](stress.png)",
        "",
        "## ΔW profile: does the update concentrate in a few heads?",
        "",
        "| method | ‖ΔW‖_F | share of q-head energy in the top 10% of heads | share of layer energy in the top "
        "third of layers | largest single head share | mean effective rank |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in methods:
        p = m.get("profile")
        if p:
            lines.append(
                f"| {m['name']} | {_f(p['frobenius_norm'], 2)} | {_f(p['q_head_energy_top10pct_share'])} | "
                f"{_f(p['layer_energy_top_third_share'])} | {_f(p['max_head_share'])} | "
                f"{_f(p['effective_rank_mean'], 2)} |"
            )
    lines += [
        "",
        "Query-head energy: squared ΔW norm of a head's q_proj rows plus its o_proj columns; 10% of 270 heads is "
        "27 (uniform spread would give 0.10).",
        "",
        "![profiles](profiles.png)",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], profiles: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in report["methods"] if m["stress"]]
    names = [m["name"] for m in methods]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    single = [m["stress"]["single_turn"]["intended_label_rate"] or 0 for m in methods]
    sessions = [m["stress"]["sessions"]["intended_label_rate"] or 0 for m in methods]
    axes[0].bar(x - 0.2, single, 0.4, label="single turn")
    axes[0].bar(x + 0.2, sessions, 0.4, label="sessions")
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title("intended-label rate")
    axes[0].legend(fontsize=8)
    axes[1].bar(x, [m["stress"]["sessions"]["worst_window"]["max"] or 0 for m in methods])
    axes[1].set_title("worst 4-turn persona distance")
    for i, dim in enumerate(("formality", "politeness")):
        rho = [m["stress"]["single_turn"]["leakage"][dim]["spearman_rho"] or 0 for m in methods]
        axes[2].bar(x + (i - 0.5) * 0.4, rho, 0.4, label=dim)
    axes[2].axhline(0, color="k", lw=0.6)
    axes[2].set_title("tone leakage (Spearman ρ, customer → answer)")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out / "stress.png", dpi=110)
    plt.close(fig)

    named = [n for n in METHODS if n in profiles]
    if not named:
        return
    fig, axes = plt.subplots(1, len(named), figsize=(2.6 * len(named), 5), squeeze=False)
    for ax, name in zip(axes[0], named, strict=True):
        q = profiles[name]["q_head_energy"]
        layers = list(range(30))  # SmolLM2-135M: 30 layers x 9 query heads; layers without the adapter are 0
        width = len(next(iter(q.values())))
        grid = np.array([q.get(str(k), [0.0] * width) for k in layers])
        ax.imshow(grid / grid.sum(), aspect="auto", cmap="magma", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("query head")
        ax.set_yticks(range(len(layers)), [str(k) for k in layers], fontsize=5)
    axes[0][0].set_ylabel("layer")
    fig.suptitle("Share of ΔW energy per query head (q rows + o columns)")
    fig.tight_layout()
    fig.savefig(out / "profiles.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.study.report")
    p.add_argument("--persona", default="support-friendly")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    out = Path(args.out)
    stress_report = merged_stress(out / "stress")
    profiles = _json(out / "profiles.json") or {}
    methods = [
        method_entry(name, path, stress_report["adapters"], profiles)
        for name, path in METHODS.items()
        if path is None or (ADAPTER_ROOT / path / "adapter_config.json").is_file()
    ]
    report = {
        "persona": args.persona,
        "adapter_root": str(ADAPTER_ROOT),
        "stress_meta": stress_report["meta"],
        "stress_runs": stress_report.get("runs", []),
        "methods": methods,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    (out / "report.md").write_text(render(report, stress_report["meta"]))
    plot(report, profiles, out)
    print(f"wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
