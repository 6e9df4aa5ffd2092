"""Render a stress-suite report (``stress.evaluate_stress``): report.json, report.md, per-style and leakage plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from app.evaluation.formatting import fmt as _f
from app.evaluation.formatting import pct as _pct


def _rho(leak: dict[str, Any]) -> str:
    if leak.get("spearman_rho") is None:
        return "–"
    return f"{leak['spearman_rho']:+.2f} (p {leak['p_value']:.3f}, slope {leak['slope']:+.2f})"


def headline_rows(adapters: dict[str, dict[str, Any]]) -> list[str]:
    """The stress table (Markdown rows, header included): one row per adapter."""
    rows = [
        "| adapter | intended label (single / sessions) | persona match (single / sessions) | dispersion | "
        "dim std | alerted turns /100 | alert onsets /100 | worst window | formality leakage ρ | "
        "politeness leakage ρ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in adapters.items():
        one, ses = s["single_turn"], s["sessions"]
        rows.append(
            f"| {name} | {_pct(one['intended_label_rate'])} / {_pct(ses['intended_label_rate'])} | "
            f"{_pct(one['persona_match_rate'])} / {_pct(ses['persona_match_rate'])} | {_f(ses['dispersion_mean'])} | "
            f"{_f(ses['dimension_std_mean'])} | {_f(ses['alerted_turns_per_100'], 1)} | "
            f"{_f(ses['alert_onsets_per_100'], 1)} | {_f(ses['worst_window']['max'])} | "
            f"{_rho(one['leakage']['formality'])} | {_rho(one['leakage']['politeness'])} |"
        )
    return rows


HEADLINE_METRICS = (
    ("single.intended_label_rate", "intended label, single"),
    ("sessions.intended_label_rate", "intended label, sessions"),
    ("single.persona_match_rate", "persona match, single"),
    ("sessions.alerted_turns_per_100", "alerted turns /100"),
    ("sessions.worst_window_mean", "worst window (session mean)"),
    ("sessions.dimension_std_mean", "dim std in session"),
)


def _iv(iv: dict[str, Any]) -> str:
    if iv.get("value") is None:
        return "–"
    ci = iv["ci95"]
    seeds = ", ".join(f"{v:.2f}" for v in iv["per_seed"]) if len(iv["per_seed"]) > 1 else ""
    return f"{iv['value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" + (f" ({seeds})" if seeds else "")


def statistics_lines(stats: dict[str, Any]) -> list[str]:
    """Markdown: each method's intervals, then its paired comparison with the reference (also the CLI's output)."""
    names = [label for _, label in HEADLINE_METRICS]
    lines = [
        "## Intervals",
        "",
        "Value = mean over the method's seeds; [95% bootstrap interval over messages (single) or sessions]; "
        "(each seed's value) when there are several.",
        "",
        "| method | seeds | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for method, runs in stats["methods"].items():
        ivs = stats["intervals"][method]
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(_iv(ivs[m]) for m, _ in HEADLINE_METRICS) + " |")
    if stats["comparisons"]:
        refs = {c["reference"] for c in stats["comparisons"]}
        title = f"Paired with `{refs.pop()}`" if len(refs) == 1 else "Paired comparisons"
        lines += [
            "",
            f"## {title}",
            "",
            "Difference (method − reference) on the same messages/sessions, paired bootstrap 95% interval, sign-flip "
            "permutation p adjusted (Holm) over the methods compared; a verdict needs p < 0.05, an interval without 0 "
            "and every seed pair agreeing in sign.",
            "",
            "| method | reference | metric | difference [95% CI] | p (Holm) | seeds agree | verdict |",
            "|---|---|---|---:|---:|---|---|",
        ]
        for comp in stats["comparisons"]:
            for metric, label in HEADLINE_METRICS:
                c = comp["metrics"][metric]
                if c["diff"] is None:
                    continue
                lo, hi = c["ci95"]
                lines.append(
                    f"| {comp['method']} | {comp['reference']} | {label} | {c['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                    f"{c['p_holm']:.3f} | {'yes' if c['seeds_agree'] else 'no'} | {c['verdict']} |"
                )
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    meta, adapters = report["meta"], report["adapters"]
    lines = [
        "# Tone-consistency stress report",
        "",
        f"Suite `{meta['suite']}`: {meta['messages']} single messages, {meta['sessions']} sessions "
        f"({meta['session_turns']} turns); every answer judged against persona `{meta['persona']}` (intended label "
        f"`{meta['intended_label']}`). Greedy, max_tokens {meta['max_tokens']}, base `{meta['base_model']}` on "
        f"{meta['device']}, scorer `{meta['scorer_version']}`, {meta['created']}.",
        "",
        *headline_rows(adapters),
        "",
        f"Worst window: the largest {meta['window']}-turn rolling mean of persona distance in any session. Leakage: "
        "Spearman ρ of the answer's dimension on the customer message's (single-turn answers; permutation p-value, "
        "OLS slope); 0 means the voice does not follow the customer.",
        "",
        "## Intended-label rate by customer style (single turn)",
        "",
    ]
    styles = sorted({st for s in adapters.values() for st in s["single_turn"]["by_style"]})
    lines += ["| adapter | " + " | ".join(styles) + " |", "|---|" + "---:|" * len(styles)]
    for name, s in adapters.items():
        by = s["single_turn"]["by_style"]
        cells = " | ".join(_pct(by.get(st, {}).get("intended_label_rate")) for st in styles)
        lines.append(f"| {name} | {cells} |")
    lines += ["", "![by style](by_style.png)", "", "![leakage](leakage.png)", ""]
    if report.get("statistics"):
        lines += [*statistics_lines(report["statistics"]), ""]
    lines += ["## Cost", ""]
    lines += ["| adapter | requests | wall s | process CPU s |", "|---|---:|---:|---:|"]
    for name, s in adapters.items():
        c = s["cost"]
        lines.append(f"| {name} | {c['requests']} | {c['wall_s']} | {c['cpu_s']} |")
    lines.append("")
    return "\n".join(lines)


def plot_stress(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adapters = report["adapters"]
    names = list(adapters)
    styles = sorted({st for s in adapters.values() for st in s["single_turn"]["by_style"]})
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(styles) + 3), 4))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(styles))
    for i, name in enumerate(names):
        by = adapters[name]["single_turn"]["by_style"]
        ax.bar(x + i * width, [by.get(st, {}).get("intended_label_rate") or 0 for st in styles], width, label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2, styles, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("intended-label rate")
    ax.set_title(f"Intended label ({report['meta']['intended_label']}) by customer style")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out / "by_style.png", dpi=110)
    plt.close(fig)

    rows = report.get("rows", {})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, dim in zip(axes, ("formality", "politeness"), strict=True):
        for name in names:
            single = rows.get(name, {}).get("single", [])
            ax.scatter([r[f"customer_{dim}"] for r in single], [r[dim] for r in single], s=10, alpha=0.6, label=name)
        ax.set_xlabel(f"customer {dim}")
        ax.set_ylabel(f"answer {dim}")
        ax.set_title(f"Tone leakage: {dim}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out / "leakage.png", dpi=110)
    plt.close(fig)


def write_stress_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    (out / "report.md").write_text(render_markdown(report))
    plot_stress(report, out)
