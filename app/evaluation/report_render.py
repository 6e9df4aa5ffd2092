"""The outputs of `tonewatch eval`: ``report.json``, ``report.md`` and the PNG plots (labels, dimensions, latency)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from app.evaluation.formatting import fmt as _f
from app.evaluation.formatting import pct as _pct
from app.scoring.labels import DIMENSIONS, LABELS


def render_markdown(report: dict[str, Any]) -> str:
    meta, adapters = report["meta"], report["adapters"]
    personas = meta["personas"]
    lines = [
        "# Adapter comparison report",
        "",
        f"Base model `{meta['base_model']}` on {meta['device']}; {meta['prompts']} prompts"
        + (f" from `{meta['prompts_source']}`" if meta.get("prompts_source") else "")
        + f", {meta['sessions']} sessions x {meta['turns']} turns per adapter, max_tokens {meta['max_tokens']}, "
        f"temperature {meta['temperature']} ({'greedy' if meta['temperature'] <= 0 else 'sampled'}), engine batch "
        f"<= {meta['max_batch_size']}. Generated {meta['created']} in {meta['duration_s']} s by `tonewatch eval`.",
        "",
        f"Answers are scored by the tone scorer ({meta.get('scorer') or 'version not recorded'}); an adapter named "
        "like a shipped persona is judged "
        "against that persona (drift baseline = its exemplars), others without one (drift baseline = the "
        "session's first 3 turns).",
        "",
        "## Summary",
        "",
        "| adapter | top label | "
        + " | ".join(f"{label}" for label in LABELS)
        + " | "
        + " | ".join(f"match {p}" for p in personas)
        + " | formality | politeness | warmth | dispersion | drift alerts | p50 s | p99 s | tok/s | collapsed |",
        "|---|---|" + "---:|" * (len(LABELS) + len(personas) + 9),
    ]
    for name, s in adapters.items():
        dims = " | ".join(_f(s["dimensions"][d]["mean"], 2) for d in DIMENSIONS)
        lines.append(
            f"| {name} | {s['top_label']} | "
            + " | ".join(_pct(s["label_share"][label]) for label in LABELS)
            + " | "
            + " | ".join(_pct(s["persona_match_rate"].get(p)) for p in personas)
            + f" | {dims} | {_f(s['dispersion_mean'])} | {s['sessions_alerted']}/{s['sessions']} | "
            f"{_f(s['latency_p50_s'], 2)} | {_f(s['latency_p99_s'], 2)} | {_f(s['tokens_per_s'], 1)} | "
            f"{s['quality']['collapsed']} |"
        )
    lines += [
        "",
        "Label columns: share of the single-turn answers with that tone label. Match: share of answers "
        "within the persona's match radius. Dimensions: means over the single-turn answers. Dispersion: "
        "within-session tone dispersion (drift detector, mean over sessions). Latency: per request "
        "(single-turn and session turns). tok/s: generated tokens / wall time of the adapter's single-turn "
        "batch.",
        "",
        "![labels](labels.png)",
        "",
        "![dimensions](dimensions.png)",
        "",
        "![latency](latency.png)",
        "",
    ]
    for name, s in adapters.items():
        q = s["quality"]
        lines += [
            f"## {name}",
            "",
            f"Persona: {s['persona'] or 'none'}; {s['answers']} single-turn answers, {s['requests']} requests in all.",
            "",
            "| metric | value |",
            "|---|---|",
            "| labels | " + ", ".join(f"{label} {s['labels'][label]}" for label in LABELS) + " |",
        ]
        for p in personas:
            lines.append(
                f"| persona match / mean distance: {p} | {_pct(s['persona_match_rate'].get(p))} / "
                f"{_f(s['persona_distance_mean'].get(p))} |"
            )
        for d in DIMENSIONS:
            lines.append(f"| {d} mean ± std | {_f(s['dimensions'][d]['mean'])} ± {_f(s['dimensions'][d]['std'])} |")
        lines += [
            f"| within-session dispersion (mean) | {_f(s['dispersion_mean'])} |",
            f"| within-session dimension std (mean) | {_f(s['session_dim_std_mean'])} |",
            f"| drift alerts (sessions alerted / total) | {s['sessions_alerted']}/{s['sessions']} |",
            f"| latency p50 / p99 (s) | {_f(s['latency_p50_s'], 2)} / {_f(s['latency_p99_s'], 2)} |",
            f"| time to first token p50 (s) | {_f(s['ttft_p50_s'], 2)} |",
            f"| tokens/s (batch) / per request p50 | {_f(s['tokens_per_s'], 1)} / "
            f"{_f(s['request_tokens_per_s_p50'], 1)} |",
            f"| completion tokens mean; cut at max_tokens | {_f(s['completion_tokens_mean'], 1)}; "
            f"{s['finished_by_length']}/{s['answers']} |",
            f"| empty / collapsed answers; distinct-2 mean; max 3-gram repeat | {q['empty']} / {q['collapsed']}; "
            f"{_f(q['distinct2_mean'])}; {q['max_ngram_repeat']} |",
            "",
        ]
        samples = report.get("answers", {}).get(name, [])[:3]
        if samples:
            lines += ["Sample answers:", ""]
            for a in samples:
                lines.append(f"- *{_md(a['prompt'])}* → **{a['label']}**: {_md(a['answer'])}")
            lines.append("")
    return "\n".join(lines)


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def write_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    (out / "report.md").write_text(render_markdown(report))
    plot_report(report, out)


def plot_report(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adapters = report["adapters"]
    names = list(adapters)
    x = np.arange(len(names))
    colors = {"formal": "#4c72b0", "friendly": "#dd8452", "casual": "#55a868", "robotic": "#8172b3"}

    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 4))
    bottom = np.zeros(len(names))
    for label in LABELS:
        share = np.array([adapters[n]["label_share"][label] for n in names])
        ax.bar(x, share, bottom=bottom, label=label, color=colors[label])
        bottom += share
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylabel("share of answers")
    ax.set_title("Tone label distribution per adapter")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out / "labels.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 4))
    width = 0.8 / len(DIMENSIONS)
    for i, d in enumerate(DIMENSIONS):
        means = [adapters[n]["dimensions"][d]["mean"] or 0.0 for n in names]
        stds = [adapters[n]["dimensions"][d]["std"] or 0.0 for n in names]
        ax.bar(x + (i - 1) * width, means, width, yerr=stds, capsize=3, label=d)
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean ± std")
    ax.set_title("Tone dimensions per adapter")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out / "dimensions.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 4))
    ax.bar(x - 0.2, [adapters[n]["latency_p50_s"] or 0.0 for n in names], 0.4, label="p50")
    ax.bar(x + 0.2, [adapters[n]["latency_p99_s"] or 0.0 for n in names], 0.4, label="p99")
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylabel("seconds per request")
    ax.set_title("Request latency per adapter")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
