"""Build the adapter study's report (bench/results/study/report.{md,json} + plots) from what the study wrote
(bench/study/run_study.sh):

* each adapter's training_summary.json (train-adapter), one folder per method and seed:
  models/adapters/study/<method>/seed<N>/;
* the stress-suite reports, one per method with all its seeds (bench/results/study/stress/<method>/report.json;
  they keep every scored answer, so intervals and paired tests are computed here from the rows);
* the ΔW profiles (python -m bench.study.profiles profile bench/results/study/profiles.json ...).

    python -m bench.study.report [--out bench/results/study]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from app.evaluation import stress_metrics as sm
from app.evaluation import stress_stats
from app.evaluation.formatting import fmt as _f
from app.evaluation.stress_report import HEADLINE_METRICS, headline_rows, statistics_lines

ADAPTER_ROOT = Path("models/adapters")
STUDY = ADAPTER_ROOT / "study"
OUT = Path("bench/results/study")
# (method, what it is); the order of the report's tables
METHODS: dict[str, str] = {
    "base": "the base model, no adapter",
    "lora-r8": "LoRA r8 q/k/v/o (the control: the shipped support-friendly recipe)",
    "dora-r8": "DoRA r8 q/k/v/o",
    "adalora-r8": "AdaLoRA rank 8 → 4 q/k/v/o",
    "qlora-r8": "LoRA r8 q/k/v/o trained on the NF4 4-bit base (QLoRA)",
    "lora-r16": "LoRA r16 q/k/v/o",
    "lora-r4": "LoRA r4 q/k/v/o",
    "sparse-heads": "LoRA r16 on the 10 layers × 3+1 heads with most ΔW energy in LoRA r4 seed 13",
    "lora-r1": "LoRA r1 on q and v (very low parameter count)",
}
# paired comparisons at matched trainable parameters (the claim's test), plus capacity and the tiny arm vs the control
PAIRS: list[tuple[str, str]] = [
    ("dora-r8", "lora-r8"),
    ("adalora-r8", "lora-r8"),
    ("qlora-r8", "lora-r8"),
    ("sparse-heads", "lora-r4"),
    ("lora-r4", "lora-r8"),
    ("lora-r16", "lora-r8"),
    ("lora-r1", "lora-r8"),
]
CONSTRUCTED = {"sparse-heads"}  # methods whose ΔW concentration is imposed, not learned
STABILITY = (  # per-adapter stress values that concentration might predict
    ("sessions.intended_label_rate", "intended label, sessions"),
    ("sessions.alerted_turns_per_100", "alerted turns /100"),
    ("sessions.worst_window_mean", "worst window"),
    ("sessions.dimension_std_mean", "dim std in session"),
)


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_stress(folder: Path) -> dict[str, Any]:
    """The per-method stress reports under ``folder`` as one: same suite settings, rows by run, methods by seed."""
    merged: dict[str, Any] = {"meta": {}, "adapters": {}, "rows": {}, "methods": {}, "runs": []}
    for path in sorted(folder.glob("*/report.json")):
        run = json.loads(path.read_text())
        meta = {k: v for k, v in run["meta"].items() if k not in ("created", "cpu")}
        if merged["meta"] and any(merged["meta"].get(k) != v for k, v in meta.items()):
            raise ValueError(f"{path}: stress settings differ from the other runs")
        merged["meta"] = meta
        merged["adapters"].update(run["adapters"])
        merged["rows"].update(run["rows"])
        merged["methods"].update((run.get("statistics") or {}).get("methods") or {n: [n] for n in run["adapters"]})
        merged["runs"].append(
            {"folder": str(path.parent), "created": run["meta"]["created"], "cpu": run["meta"].get("cpu")}
        )
    return merged


def seed_folders(method: str) -> list[Path]:
    folders = [p for p in (STUDY / method).glob("seed*") if (p / "adapter_config.json").is_file()]
    return sorted(folders, key=lambda p: int(p.name.removeprefix("seed")))


def train_entry(folder: Path) -> dict[str, Any]:
    config = _json(folder / "adapter_config.json") or {}
    summary = _json(folder / "training_summary.json") or {}
    t = summary.get("config", {})
    return {
        "path": str(folder.relative_to(ADAPTER_ROOT)),
        "seed": t.get("seed"),
        "peft_type": "DORA" if config.get("use_dora") else config.get("peft_type"),
        "rank": config.get("r") or config.get("init_r"),
        "target_rank": config.get("target_r"),
        "target_modules": sorted(config.get("target_modules") or []),
        "layers": config.get("layers_to_transform"),
        "quantize": t.get("quantize"),
        "trainable_params": summary.get("trainable_params"),
        "weights_bytes": (folder / "adapter_model.safetensors").stat().st_size,
        "steps": t.get("steps"),
        "batch_size": t.get("batch_size"),
        "lr": t.get("lr"),
        "cpu_s": summary.get("cpu_s"),
        "wall_s": summary.get("duration_s"),
        "final_loss": summary.get("final_loss"),
        "device": summary.get("device"),
        "cpu": summary.get("cpu"),
    }


def method_entries(stress: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, what in METHODS.items():
        seeds = [train_entry(f) for f in seed_folders(name)] if name != "base" else []
        if not seeds and (name != "base" or name not in stress["methods"]):
            continue
        first = seeds[0] if seeds else {}
        runs = stress["methods"].get(name, [])
        out.append(
            {
                "name": name,
                "what": what,
                "peft_type": first.get("peft_type"),
                "rank": first.get("rank"),
                "target_rank": first.get("target_rank"),
                "quantize": first.get("quantize"),
                "trainable_params": first.get("trainable_params", 0),
                "steps": first.get("steps"),
                "batch_size": first.get("batch_size"),
                "seeds": [s["seed"] for s in seeds],
                "paths": [s["path"] for s in seeds],
                "train": seeds,
                "stress_runs": runs,
                "stress_per_seed": {r: stress["adapters"][r] for r in runs if r in stress["adapters"]},
            }
        )
    return out


def concentration_vs_stability(
    methods: list[dict[str, Any]], profiles: dict[str, Any], rows_by_run: dict[str, Any], intended: str, window: int
) -> dict[str, Any]:
    """Per trained adapter (method × seed): its ΔW concentration and its stress stability values; Spearman ρ with a
    permutation p across adapters for each pair (does a concentrated update hold the voice better?)."""
    points = []
    for m in methods:
        for entry in m["train"]:
            key = f"{m['name']}-seed{entry['seed']}"  # the profile's and the stress run's name (run_study.sh)
            prof = profiles.get(key)
            rows = rows_by_run.get(key) if key in m["stress_runs"] else None
            if not prof or rows is None:
                continue
            point = {
                "adapter": key,
                "q_head_top10": prof.get("q_head_energy_top10pct_share"),
                "layer_top_third": prof.get("layer_energy_top_third_share"),
            }
            for metric, _ in STABILITY:
                point[metric] = stress_stats.value([rows], stress_stats.BY_NAME[metric], intended, window=window)
            points.append(point)
    # the sparse method is concentrated by construction: also test the adapters free to put their update anywhere
    free = [p for p in points if p["adapter"].rsplit("-seed", 1)[0] not in CONSTRUCTED]
    return {"points": points, "tests": _spearman_tests(points), "tests_unconstrained": _spearman_tests(free)}


def _spearman_tests(points: list[dict[str, Any]]) -> dict[str, Any]:
    tests = {}
    for x in ("q_head_top10", "layer_top_third"):
        for metric, _ in STABILITY:
            pairs = [(p[x], p[metric]) for p in points if p[x] is not None and p[metric] is not None]
            if len(pairs) >= 4:
                xs, ys = zip(*pairs, strict=True)
                leak = sm.leakage(list(xs), list(ys))
                tests[f"{x}~{metric}"] = {"n": len(pairs), "rho": leak["spearman_rho"], "p": leak["p_value"]}
    return tests


def render(report: dict[str, Any]) -> str:
    meta, methods = report["stress_meta"], report["methods"]
    lines = [
        "# Adapter study: does LoRA hold a tone worse than DoRA, AdaLoRA, QLoRA or a head-targeted sparse LoRA?",
        "",
        f"Persona `{report['persona']}`; adapters under `{STUDY}/<method>/seed<N>/`. Method and discussion: "
        "[docs/study.md](../../../docs/study.md). Stress suite: "
        f"{meta.get('messages')} single messages + {meta.get('sessions')} sessions ({meta.get('session_turns')} "
        f"turns), greedy, max_tokens {meta.get('max_tokens')}, scorer `{meta.get('scorer_version')}`, on "
        f"{meta.get('device')}.",
        "",
        "## Methods and training cost",
        "",
        "| method | what | type | trainable params | steps × batch | seeds | CPU s per seed | trained on | "
        "final loss per seed |",
        "|---|---|---|---:|---:|---|---:|---|---:|",
    ]
    for m in methods:
        t = m["train"]
        steps = f"{m['steps']} × {m['batch_size']}" if t else "–"
        cpu = ", ".join(_f(s.get("cpu_s"), 0) for s in t) or "–"
        loss = ", ".join(_f(s.get("final_loss"), 3) for s in t) or "–"
        kind = (m["peft_type"] or "base") + (f" on {m['quantize']}" if m.get("quantize") else "")
        where = ", ".join(sorted({s.get("cpu") or "?" for s in t})) or "–"
        lines.append(
            f"| {m['name']} | {m['what']} | {kind} | {_f(m['trainable_params'])} | {steps} | "
            f"{', '.join(map(str, m['seeds'])) or '–'} | {cpu} | {where} | {loss} |"
        )
    lines += [
        "",
        "Stress runs (greedy decoding can differ in rare tokens between CPUs; each run names its own):",
        "",
        "| run | created | CPU |",
        "|---|---|---|",
        *(f"| {r['folder']} | {r['created']} | {r.get('cpu') or '?'} |" for r in report["stress_runs"]),
    ]
    stats = report.get("statistics")
    lines += ["", "## Stress suite, per adapter and seed", "", *headline_rows(report["stress_per_run"]), ""]
    if stats:
        lines += [*statistics_lines(stats), "", "![intervals](intervals.png)", ""]
    conc = report.get("concentration")
    if conc and conc["points"]:
        lines += [
            "## ΔW concentration and tone stability",
            "",
            "Per adapter: share of query-head ΔW energy (q rows + o columns) in the top 10% of the model's 270 heads "
            "(uniform spread: 0.10) and of layer energy in the top third of layers, beside its stress values.",
            "",
            "| adapter | q-head top 10% | layer top third | " + " | ".join(label for _, label in STABILITY) + " |",
            "|---|---:|---:|" + "---:|" * len(STABILITY),
        ]
        for p in conc["points"]:
            cells = " | ".join(_f(p[m]) for m, _ in STABILITY)
            lines.append(f"| {p['adapter']} | {_f(p['q_head_top10'])} | {_f(p['layer_top_third'])} | {cells} |")
        free = conc.get("tests_unconstrained") or {}
        lines += [
            "",
            "Spearman ρ (permutation p) over all adapters, and over those free to place their update (without "
            f"{', '.join(sorted(CONSTRUCTED))}, concentrated by construction):",
            "",
            "| concentration ~ stability | adapters | ρ | p | unconstrained adapters | ρ | p |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for key, t in conc["tests"].items():
            u = free.get(key) or {}
            lines.append(
                f"| {key} | {t['n']} | {_f(t['rho'], 2)} | {_f(t['p'])} | {u.get('n', '–')} | "
                f"{_f(u.get('rho'), 2)} | {_f(u.get('p'))} |"
            )
        lines += ["", "![profiles](profiles.png)", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], profiles: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = report.get("statistics")
    if stats:
        names = list(stats["intervals"])
        fig, axes = plt.subplots(1, len(HEADLINE_METRICS), figsize=(3.2 * len(HEADLINE_METRICS), 4))
        for ax, (metric, label) in zip(axes, HEADLINE_METRICS, strict=True):
            ivs = [stats["intervals"][n][metric] for n in names]
            y = np.arange(len(names))
            values = [iv["value"] if iv["value"] is not None else np.nan for iv in ivs]
            lo = [iv["value"] - iv["ci95"][0] if iv["ci95"] else 0 for iv in ivs]
            hi = [iv["ci95"][1] - iv["value"] if iv["ci95"] else 0 for iv in ivs]
            ax.errorbar(values, y, xerr=[lo, hi], fmt="o", capsize=3)
            for k, iv in enumerate(ivs):
                ax.scatter(iv["per_seed"], [k] * len(iv["per_seed"]), marker="x", color="gray", s=18, zorder=3)
            ax.set_yticks(y, names if ax is axes[0] else [""] * len(names), fontsize=8)
            ax.invert_yaxis()
            ax.set_title(label, fontsize=9)
            ax.grid(alpha=0.3)
        fig.suptitle("Seed mean, 95% bootstrap interval over messages/sessions, seeds (x)")
        fig.tight_layout()
        fig.savefig(out / "intervals.png", dpi=110)
        plt.close(fig)

    named = [k for k in profiles if k.endswith("seed13")]
    if not named:
        return
    fig, axes = plt.subplots(1, len(named), figsize=(2.4 * len(named), 5), squeeze=False)
    for ax, name in zip(axes[0], named, strict=True):
        q = profiles[name]["q_head_energy"]
        width = len(next(iter(q.values())))
        grid = np.array([q.get(str(k), [0.0] * width) for k in range(30)])  # SmolLM2-135M: 30 layers x 9 heads
        ax.imshow(grid / grid.sum(), aspect="auto", cmap="magma", interpolation="nearest")
        ax.set_title(name.removesuffix("-seed13"), fontsize=9)
        ax.set_xlabel("query head")
        ax.set_yticks(range(30), [str(k) for k in range(30)], fontsize=5)
    axes[0][0].set_ylabel("layer")
    fig.suptitle("Share of ΔW energy per query head (q rows + o columns), seed 13")
    fig.tight_layout()
    fig.savefig(out / "profiles.png", dpi=110)
    plt.close(fig)


def build(out: Path, persona: str = "support-friendly") -> dict[str, Any]:
    stress = load_stress(out / "stress")
    profiles = _json(out / "profiles.json") or {}
    methods = method_entries(stress)
    report: dict[str, Any] = {
        "persona": persona,
        "adapter_root": str(ADAPTER_ROOT),
        "stress_meta": stress["meta"],
        "stress_runs": stress["runs"],
        "methods": methods,
        "stress_per_run": stress["adapters"],
    }
    if stress["rows"]:
        intended, window = stress["meta"]["intended_label"], stress["meta"]["window"]
        groups = {
            m["name"]: [stress["rows"][r] for r in m["stress_runs"]]
            for m in methods
            if m["stress_runs"] and all(r in stress["rows"] for r in m["stress_runs"])
        }
        pairs = [(a, b) for a, b in PAIRS if a in groups and b in groups]
        report["statistics"] = {
            "methods": {n: stress["methods"][n] for n in groups},
            **stress_stats.compare(groups, pairs, intended, window=window),
        }
        for m in methods:
            m["stress"] = report["statistics"]["intervals"].get(m["name"])
        report["concentration"] = concentration_vs_stability(methods, profiles, stress["rows"], intended, window)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.study.report")
    p.add_argument("--persona", default="support-friendly")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    out = Path(args.out)
    report = build(out, args.persona)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    (out / "report.md").write_text(render(report))
    plot(report, _json(out / "profiles.json") or {}, out)
    print(f"wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
