"""Tone-consistency stress suite: `tonewatch eval --suite stress`.

Runs any adapter (or the base model) on the authored stress data in ``data/stress`` (customers who are angry,
sarcastic, slangy, stiff/legal, distressed, confused, very long, non-native, terse or polite; sessions whose style
changes every turn) through the same Engine + AdapterRegistry + ToneScorer as ``tonewatch eval`` (``report_run.py``
builds the stack, generates, scores and simulates sessions with the drift detector). Every answer is judged against
one persona (``--persona``), whatever the adapter is called, so different adapters of one voice are comparable.

Per adapter (see ``stress_metrics`` for the definitions): intended-label rate (overall and per customer style),
persona match rate and mean distance, within-session dispersion and dimension std, drift alerts per 100 session
turns, the worst ``window``-turn rolling mean of persona distance, and tone leakage: the answer's formality and
politeness regressed on the customer message's (scored by the same scorer), single-turn and in sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.engine.cpu import cpu_name
from app.evaluation import stress_metrics as sm
from app.scoring.labels import DIMENSIONS

log = logging.getLogger("tonewatch.stress")

LEAKAGE_DIMENSIONS = ("formality", "politeness")
DEFAULT_DATA = Path("data/stress")
DEFAULT_OUT = Path("bench/results/stress")


@dataclass
class StressSuite:
    messages: list[dict[str, Any]]  # {"id", "style", "topic", "text"}
    sessions: list[dict[str, Any]]  # {"id", "turns": [{"style", "topic", "text"}]}
    source: str = ""

    @property
    def customer_texts(self) -> list[str]:
        return [m["text"] for m in self.messages] + [t["text"] for s in self.sessions for t in s["turns"]]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_suite(
    folder: str | Path = DEFAULT_DATA,
    *,
    per_style: int | None = None,
    sessions: int | None = None,
    turns: int | None = None,
) -> StressSuite:
    """The stress data, optionally cut down: the first ``per_style`` messages of every style (file order), the first
    ``sessions`` sessions, the first ``turns`` turns of each."""
    folder = Path(folder)
    messages = _read_jsonl(folder / "messages.jsonl")
    if per_style is not None:
        seen: Counter[str] = Counter()
        kept = []
        for m in messages:
            if seen[m["style"]] < per_style:
                kept.append(m)
                seen[m["style"]] += 1
        messages = kept
    plans = _read_jsonl(folder / "sessions.jsonl")[:sessions]
    if turns is not None:
        plans = [{**s, "turns": s["turns"][:turns]} for s in plans]
    return StressSuite(messages, plans, str(folder))


# ---- summary (pure) ---------------------------------------------------------------------------------------------


def summarize_stress(
    single: list[dict[str, Any]], sessions: list[list[dict[str, Any]]], intended: str, window: int = 4
) -> dict[str, Any]:
    """Stress metrics from scored rows. A row: {"style", "label", "match", "distance", "formality", "politeness",
    "warmth", "customer_formality", "customer_politeness"}; session rows add "alert" and "dispersion"."""
    styles = sorted({r["style"] for r in single})
    session_rows = [r for s in sessions for r in s]
    alerts = [sm.alert_counts([bool(r["alert"]) for r in s]) for s in sessions]
    turns = sum(a["turns"] for a in alerts)
    windows = [sm.worst_window([r["distance"] for r in s], window) for s in sessions]
    worst_means = [w["mean"] for w in windows if w is not None]

    def leak(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {d: sm.leakage([r[f"customer_{d}"] for r in rows], [r[d] for r in rows]) for d in LEAKAGE_DIMENSIONS}

    labels = Counter(r["label"] for r in single + session_rows)
    return {
        "intended_label": intended,
        "single_turn": {
            "answers": len(single),
            "intended_label_rate": sm.intended_label_rate([r["label"] for r in single], intended),
            "persona_match_rate": sm.rate([r["match"] for r in single]),
            "persona_distance_mean": _mean([r["distance"] for r in single]),
            "by_style": {
                style: {
                    "answers": sum(r["style"] == style for r in single),
                    "intended_label_rate": sm.intended_label_rate(
                        [r["label"] for r in single if r["style"] == style], intended
                    ),
                    "persona_distance_mean": _mean([r["distance"] for r in single if r["style"] == style]),
                }
                for style in styles
            },
            "leakage": leak(single),
        },
        "sessions": {
            "sessions": len(sessions),
            "turns": turns,
            "intended_label_rate": sm.intended_label_rate([r["label"] for r in session_rows], intended),
            "persona_match_rate": sm.rate([r["match"] for r in session_rows]),
            "persona_distance_mean": _mean([r["distance"] for r in session_rows]),
            "dispersion_mean": _mean([s[-1]["dispersion"] for s in sessions if s and s[-1]["dispersion"] is not None]),
            "dimension_std_mean": _mean(
                [float(np.mean([np.std([r[d] for r in s]) for d in DIMENSIONS])) for s in sessions if len(s) >= 2]
            ),
            "sessions_alerted": sum(a["alerted_turns"] > 0 for a in alerts),
            "alerted_turns_per_100": sm.per_100(sum(a["alerted_turns"] for a in alerts), turns),
            "alert_onsets_per_100": sm.per_100(sum(a["onsets"] for a in alerts), turns),
            "worst_window": {
                "window": window,
                "max": max(worst_means) if worst_means else None,
                "mean_of_session_worst": _mean(worst_means),
            },
            "leakage": leak(session_rows),
        },
        "labels": dict(sorted(labels.items())),
    }


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# ---- run (engine + scorer) --------------------------------------------------------------------------------------


async def customer_tones(ctx: Any, suite: StressSuite) -> list[dict[str, float]]:
    """Formality/politeness/warmth of every customer text (messages, then session turns in order)."""
    reports = await ctx.scorer.score(suite.customer_texts, persona=None, label="stress-customer")
    return [{d: r[d] for d in DIMENSIONS} for r in reports]


def intended_label_of(ctx: Any, persona: str) -> str:
    """The persona's intended tone label: the most common label among its exemplars."""
    p = ctx.scorer.get_persona(persona)
    labels = Counter(getattr(p, "exemplar_labels", []) or [])
    if not labels:
        raise ValueError(f"persona {persona!r} has no exemplar labels; pass --intended-label")
    return labels.most_common(1)[0][0]


async def run_stress(
    ctx: Any,
    adapter: str,
    suite: StressSuite,
    persona: str,
    customer: list[dict[str, float]],
    *,
    intended: str,
    max_tokens: int = 64,
    window: int = 4,
) -> dict[str, Any]:
    """Generate, score and summarise one adapter on the suite (greedy). Returns {"summary", "single", "sessions",
    "wall_s", "cpu_s"}: the rows keep every answer so a report can quote them."""
    from app.evaluation.report_run import generate, run_session, sampling, score_answers

    params = sampling(max_tokens)
    wall, cpu = time.perf_counter(), time.process_time()
    answers = await asyncio.gather(
        *(generate(ctx, adapter, [{"role": "user", "content": m["text"]}], params) for m in suite.messages)
    )
    await score_answers(ctx, list(answers), adapter)
    results = await asyncio.gather(
        *(run_session(ctx, [(adapter, t["text"]) for t in s["turns"]], persona, params) for s in suite.sessions)
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    def row(message: dict[str, Any], answer: Any, tone: dict[str, float]) -> dict[str, Any]:
        own = answer.personas.get(persona, {})
        return {
            "style": message["style"],
            "topic": message.get("topic"),
            "customer": message["text"],
            "answer": answer.text,
            "finish_reason": answer.finish_reason,
            "label": answer.tone["label"],
            "match": bool(own.get("match")),
            "distance": own.get("distance"),
            **{d: answer.tone[d] for d in DIMENSIONS},
            **{f"customer_{d}": tone[d] for d in DIMENSIONS},
        }

    single = [row(m, a, customer[i]) for i, (m, a) in enumerate(zip(suite.messages, answers, strict=True))]
    offset, session_rows = len(suite.messages), []
    for plan, result in zip(suite.sessions, results, strict=True):
        rows = []
        for t, (turn, answer, drift) in enumerate(zip(plan["turns"], result.answers, result.drift, strict=True)):
            rows.append(
                {**row(turn, answer, customer[offset + t]), "alert": drift["alert"], "dispersion": drift["dispersion"]}
            )
        offset += len(plan["turns"])
        session_rows.append(rows)
    summary = summarize_stress(single, session_rows, intended, window)
    summary["cost"] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "requests": offset}
    return {"summary": summary, "single": single, "sessions": session_rows}


async def evaluate_stress(
    adapters: dict[str, str | None],
    suite: StressSuite,
    persona: str,
    *,
    adapter_root: Path | None = None,
    intended: str | None = None,
    max_tokens: int = 64,
    window: int = 4,
    out_dir: Path | None = DEFAULT_OUT,
    context: Any = None,
    methods: dict[str, list[str]] | None = None,
    reference: str | None = None,
    together: bool = False,
) -> dict[str, Any]:
    """Run the suite on every adapter: {report name: adapter path under the root, or None for a manifest/default
    path}. 'base' is the model without an adapter. ``methods`` groups runs as one method's seeds (default: each run
    its own method); every method is compared with ``reference`` (default: the first). ``together`` runs every
    adapter's requests at once instead of one adapter after another (greedy answers may then differ from a run on
    its own in the last bits of a batch's arithmetic). Writes report.json,
    report.md and plots when ``out_dir`` is set."""
    from app.evaluation.report_run import build_context, close_context

    if methods is not None and reference is not None and reference not in methods:
        raise ValueError(f"reference {reference!r} is not one of the methods: {', '.join(methods)}")
    ctx = context or await build_context([], adapter_root)
    try:
        if persona not in ctx.scorer.personas:
            raise ValueError(f"unknown persona {persona!r}; known: {', '.join(sorted(ctx.scorer.personas))}")
        for name, path in adapters.items():
            if ctx.adapter_for(name) is not None and name not in ctx.registry.adapters:
                await ctx.registry.load(name, path or name)
        intended = intended or intended_label_of(ctx, persona)
        customer = await customer_tones(ctx, suite)
        runs = {}

        async def one(name: str) -> dict[str, Any]:
            log.info("stress: %s (%d messages, %d sessions)", name, len(suite.messages), len(suite.sessions))
            run = await run_stress(
                ctx, name, suite, persona, customer, intended=intended, max_tokens=max_tokens, window=window
            )
            log.info("stress: %s done in %.0f s", name, run["summary"]["cost"]["wall_s"])
            return run

        if together:
            # one stream of requests for every run: the engine batches rows of different adapters in one forward, so
            # N seeds' sessions decode N times as wide; each run's cost is then the shared run's (marked as such)
            for name, run in zip(adapters, await asyncio.gather(*(one(n) for n in adapters)), strict=True):
                run["summary"]["cost"]["shared_with"] = len(adapters)
                runs[name] = run
        else:
            for name in adapters:
                runs[name] = await one(name)
    finally:
        if context is None:
            close_context(ctx)
    report = {
        "meta": {
            "suite": suite.source,
            "persona": persona,
            "intended_label": intended,
            "messages": len(suite.messages),
            "sessions": len(suite.sessions),
            "session_turns": sum(len(s["turns"]) for s in suite.sessions),
            "max_tokens": max_tokens,
            "window": window,
            "base_model": ctx.base_name,
            "device": ctx.device,
            # greedy decoding and the cost figures can differ by CPU: name the one each run came from
            "cpu": cpu_name(),
            "scorer_version": ctx.scorer_head,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "adapters": {name: run["summary"] for name, run in runs.items()},
        "rows": {name: {"single": run["single"], "sessions": run["sessions"]} for name, run in runs.items()},
    }
    report["statistics"] = statistics(report, methods or {name: [name] for name in runs}, reference, window)
    if out_dir is not None:
        from app.evaluation.stress_report import write_stress_report

        write_stress_report(report, Path(out_dir))
    return report


def statistics(
    report: dict[str, Any], methods: dict[str, list[str]], reference: str | None, window: int = 4
) -> dict[str, Any]:
    """Intervals per method (over its seeds and the suite's units) and each method's paired comparison with the
    reference method (app.evaluation.stress_stats)."""
    from app.evaluation import stress_stats

    reference = reference or next(iter(methods))
    if reference not in methods:
        raise ValueError(f"reference {reference!r} is not one of the methods: {', '.join(methods)}")
    groups = {m: [report["rows"][run] for run in runs] for m, runs in methods.items()}
    pairs = [(m, reference) for m in methods if m != reference]
    out = stress_stats.compare(groups, pairs, report["meta"]["intended_label"], window=window)
    return {"methods": methods, "reference": reference, **out}


# ---- CLI ----------------------------------------------------------------------------------------------------------


def parse_methods(spec: str) -> tuple[dict[str, str | None], dict[str, list[str]]]:
    """'a,b=study/b,c=study/c/seed13+study/c/seed14' -> runs {"a": None, "b": "study/b", "c-seed13": ...,
    "c-seed14": ...} (name=path under the adapter root) and methods {"a": ["a"], "b": ["b"], "c": ["c-seed13",
    "c-seed14"]}: several '+'-joined paths are one method's seeds, each run under its folder's name."""
    runs: dict[str, str | None] = {}
    methods: dict[str, list[str]] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, _, paths = item.partition("=")
        name = name.strip()
        parts = [x.strip() for x in paths.split("+") if x.strip()]
        if len(parts) <= 1:
            runs[name] = parts[0] if parts else None
            methods[name] = [name]
            continue
        methods[name] = []
        for path in parts:
            run = f"{name}-{Path(path).name}"
            if run in runs:
                raise ValueError(f"{name}: two seeds in folders named {Path(path).name!r}")
            runs[run] = path
            methods[name].append(run)
    if not runs:
        raise ValueError("no adapters")
    return runs, methods


def parse_adapters(spec: str) -> dict[str, str | None]:
    """'a,b=study/b' -> {"a": None, "b": "study/b"} (name=path under the adapter root; '+'-joined seeds expand)."""
    return parse_methods(spec)[0]


def build_parser() -> argparse.ArgumentParser:
    from app.cli import DefaultsHelpFormatter

    p = argparse.ArgumentParser(
        prog="tonewatch eval --suite stress",
        description="Tone-consistency stress suite.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--adapters",
        required=True,
        help="comma-separated names, name=path under the adapter root, name=path+path for one method's seeds; 'base'",
    )
    p.add_argument("--reference", help="method every other one is compared with (default: the first)")
    p.add_argument("--persona", default="support-friendly", help="persona every answer is judged against")
    p.add_argument("--intended-label", help="default: the persona's most common exemplar label")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder with messages.jsonl and sessions.jsonl")
    p.add_argument("--per-style", type=int, help="first N single messages of each style (default: all)")
    p.add_argument("--sessions", type=int, help="first N sessions (default: all)")
    p.add_argument("--turns", type=int, help="first N turns of each session (default: all)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens generated per answer at most")
    p.add_argument("--window", type=int, default=4, help="turns in the rolling persona-distance window")
    p.add_argument(
        "--adapter-root", help="folder the adapters (and manifest.json) live in (default: TONEWATCH_ADAPTER_ROOT)"
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (report.md, report.json, PNGs)")
    p.add_argument(
        "--together",
        action="store_true",
        help="send every adapter's requests at once, batched together (faster; cost is then shared) instead of one "
        "adapter after another (default: %(default)s)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    suite = load_suite(args.data, per_style=args.per_style, sessions=args.sessions, turns=args.turns)
    runs, methods = parse_methods(args.adapters)
    report = asyncio.run(
        evaluate_stress(
            runs,
            suite,
            args.persona,
            adapter_root=Path(args.adapter_root) if args.adapter_root else None,
            intended=args.intended_label,
            max_tokens=args.max_tokens,
            window=args.window,
            out_dir=Path(args.out),
            methods=methods,
            reference=args.reference,
            together=args.together,
        )
    )
    for name, s in report["adapters"].items():
        single, sessions = s["single_turn"], s["sessions"]
        print(
            f"{name}: intended {100 * (single['intended_label_rate'] or 0):.0f}% single / "
            f"{100 * (sessions['intended_label_rate'] or 0):.0f}% sessions, alerts/100 turns "
            f"{sessions['alerted_turns_per_100']:.1f}, worst window {sessions['worst_window']['max']:.3f}, "
            f"formality leakage rho {single['leakage']['formality']['spearman_rho']}"
        )
    from app.evaluation.stress_report import statistics_lines

    print("\n".join(statistics_lines(report["statistics"])))
    print(f"wrote {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
