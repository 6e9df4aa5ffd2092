"""Adapter comparison report: `tonewatch eval`.

Builds the same serving stack the server uses (load_base_model + Engine + AdapterRegistry + ToneScorer), sends every
prompt through every requested adapter (concurrently, so the engine batches them), scores every answer, simulates
multi-turn sessions with the drift detector, and writes ``report.json``, ``report.md`` and PNG plots.

Per adapter: tone label distribution, persona match rate against every shipped persona, tone dimension means/stds,
within-session dispersion, drift alerts (sessions alerted / total), latency p50/p99 per request (DoneEvent.total_s),
tokens/s, and text-quality checks (empty answers, distinct-2, repeated n-grams, answers cut at max_tokens).

Answers are scored against the persona of the same name as the adapter when there is one (support-friendly ->
persona support-friendly), else without a persona; drift then uses that persona's exemplars as the baseline, or
the session's own first turns when there is none.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.evaluation.formatting import fmt as _f
from app.evaluation.formatting import pct as _pct

log = logging.getLogger("tonewatch.eval")

BASE_ALIASES = ("base",)
DIMENSIONS = ("formality", "politeness", "warmth")
LABELS = ("formal", "friendly", "casual", "robotic")
DEFAULT_OUT = Path(__file__).resolve().parent.parent.parent / "bench" / "results" / "eval"
WORD = re.compile(r"[A-Za-z0-9']+")


# ---- text quality -----------------------------------------------------------------------------------------------


def text_quality(text: str, n: int = 3) -> dict[str, Any]:
    """Degeneration checks: word count, distinct-2 (unique word bigrams / bigrams), the largest number of times any
    word n-gram occurs, and whether the answer counts as collapsed (empty, or an n-gram repeated more than 3 times,
    or distinct-2 below 0.5 on an answer long enough to judge)."""
    words = [w.lower() for w in WORD.findall(text)]
    bigrams = list(itertools.pairwise(words))
    distinct2 = len(set(bigrams)) / len(bigrams) if bigrams else 1.0
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    max_repeat = max(grams.values()) if grams else 0
    collapsed = not text.strip() or max_repeat > 3 or (len(bigrams) >= 8 and distinct2 < 0.5)
    return {
        "words": len(words),
        "distinct2": round(distinct2, 4),
        "max_ngram_repeat": max_repeat,
        "collapsed": collapsed,
    }


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _std(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else (0.0 if values else None)


# ---- the serving stack --------------------------------------------------------------------------------------------


@dataclass
class EvalContext:
    engine: Any
    tokenizer: Any
    registry: Any
    scorer: Any
    base_name: str
    device: str
    loaded: list[str] = field(default_factory=list)
    platform: dict[str, Any] = field(default_factory=dict)  # the CPU and the choices made for it (app.engine.cpu)

    def adapter_for(self, name: str) -> str | None:
        """Engine adapter for a report name: None for the base model."""
        return None if name in (*BASE_ALIASES, self.base_name) else name

    def persona_for(self, name: str) -> str | None:
        return name if name in self.scorer.personas else None


def _manifest_paths(root: Path) -> dict[str, str]:
    manifest = root / "manifest.json"
    if not manifest.is_file():
        return {}
    data = json.loads(manifest.read_text())
    return {e["name"]: e["path"] for e in data.get("adapters", [])}


async def build_context(
    adapters: list[str], adapter_root: Path | None = None, *, max_batch_size: int | None = None, settings: Any = None
) -> EvalContext:
    """The server's own stack (app.stack: the model as configured, quantization, output head, engine threads, prefix
    cache, adapter registry, scorer; each CPU path chosen by measurement as at server start-up) with the named
    adapters loaded. Only the queue differs: an offline run submits everything at once and waits as long as it
    takes. Adapter paths come from the adapter root's manifest.json, else the folder of the same name."""
    from app.config import Settings
    from app.metrics import Metrics
    from app.stack import build_model_stack, load_scorer, platform_for

    settings = settings or Settings()
    root = Path(adapter_root or settings.adapter_root)
    metrics = Metrics()
    platform = platform_for(settings)
    stack = await build_model_stack(
        settings,
        metrics,
        platform,
        adapter_root=root,
        max_batch_size=max_batch_size,
        max_queue=max(settings.max_queue, 4096),
        request_timeout_s=3600.0,
    )
    ctx = EvalContext(stack.engine, stack.tokenizer, stack.registry, None, stack.source.name, stack.device)
    try:
        paths = _manifest_paths(root)
        for name in adapters:
            if ctx.adapter_for(name) is not None and name not in stack.registry.adapters:
                await stack.registry.load(name, paths.get(name, name))
                ctx.loaded.append(name)
        ctx.scorer = await load_scorer(settings, metrics, platform)
    except BaseException:
        stack.engine.stop()
        raise
    ctx.platform = platform.as_dict()
    return ctx


def close_context(ctx: EvalContext) -> None:
    if ctx.scorer is not None:
        ctx.scorer.close()
    ctx.engine.stop()


# ---- generation ---------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    adapter: str
    messages: list[dict[str, str]]
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    total_s: float
    ttft_s: float
    tone: dict[str, Any] = field(default_factory=dict)  # label, probs, dims (no persona fields)
    personas: dict[str, dict[str, Any]] = field(default_factory=dict)  # persona -> {distance, match}
    quality: dict[str, Any] = field(default_factory=dict)


async def generate(ctx: EvalContext, adapter_name: str, messages: list[dict[str, str]], params: Any) -> Answer:
    """One chat completion through the engine, exactly as the server encodes it."""
    from app.engine.events import DoneEvent, ErrorEvent, GenerationRequest

    encoded = ctx.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
    handle = ctx.engine.submit(GenerationRequest(ids, params, ctx.adapter_for(adapter_name)))
    while True:
        event = await handle.events.get()
        if isinstance(event, DoneEvent):
            return Answer(
                adapter_name,
                messages,
                event.text.strip(),
                event.finish_reason,
                event.prompt_tokens,
                event.completion_tokens,
                event.total_s,
                event.ttft_s,
                quality=text_quality(event.text),
            )
        if isinstance(event, ErrorEvent):
            raise event.error


def sampling(max_tokens: int, temperature: float = 0.0, seed: int | None = None):
    from app.engine.sampling import SamplingParams

    return SamplingParams(
        max_tokens=max_tokens, temperature=temperature, top_p=1.0 if temperature <= 0 else 0.95, seed=seed
    )


async def score_answers(ctx: EvalContext, answers: list[Answer], adapter: str) -> None:
    """Fill tone (label/probs/dims) and the distance/match to every shipped persona, in place."""
    if not answers:
        return
    texts = [a.text for a in answers]
    personas = sorted(ctx.scorer.personas)
    for i, persona in enumerate(personas or [None]):
        reports = await ctx.scorer.score(texts, persona=persona, label=adapter)
        for a, r in zip(answers, reports, strict=True):
            if i == 0:
                a.tone = {"label": r["label"], "probs": r["probs"], **{d: r[d] for d in DIMENSIONS}}
            if persona is not None:
                a.personas[persona] = {"distance": r["persona_distance"], "match": r["persona_match"]}


# ---- sessions -----------------------------------------------------------------------------------------------------


@dataclass
class SessionResult:
    plan: list[str]  # adapter per turn
    persona: str | None
    answers: list[Answer]
    drift: list[dict[str, Any]]  # DriftReport.public() per turn

    @property
    def alerted(self) -> bool:
        return any(d["alert"] for d in self.drift)

    @property
    def first_alert_turn(self) -> int | None:
        """1-based turn of the first alert."""
        return next((i + 1 for i, d in enumerate(self.drift) if d["alert"]), None)

    def public(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "persona": self.persona,
            "alerted": self.alerted,
            "first_alert_turn": self.first_alert_turn,
            "final_dispersion": self.drift[-1]["dispersion"] if self.drift else None,
            "turns": [
                {
                    "adapter": a.adapter,
                    "user": a.messages[-1]["content"],
                    "answer": a.text,
                    "label": a.tone.get("label"),
                    **{d: a.tone.get(d) for d in DIMENSIONS},
                    "persona_distance": a.personas.get(self.persona, {}).get("distance") if self.persona else None,
                    "drift": d,
                }
                for a, d in zip(self.answers, self.drift, strict=True)
            ],
        }


def _user_text(prompt: list[dict[str, str]]) -> str:
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")


async def run_session(
    ctx: EvalContext, plan: list[tuple[str, str]], persona: str | None, params: Any, drift_params: Any = None
) -> SessionResult:
    """A multi-turn chat: ``plan`` is [(adapter, user message)] per turn; the history (user + assistant turns)
    is kept, so an adapter switch mid-session answers on the previous voice's history. Every answer is scored
    (against ``persona`` when given) and fed to the drift detector in order."""
    from app.monitor import drift

    history: list[dict[str, str]] = []
    answers: list[Answer] = []
    for adapter, user in plan:
        messages = [*history, {"role": "user", "content": user}]
        answer = await generate(ctx, adapter, messages, params)
        answers.append(answer)
        history = [*messages, {"role": "assistant", "content": answer.text}]
    for adapter in dict.fromkeys(a.adapter for a in answers):  # score per adapter (metrics are labelled by it)
        await score_answers(ctx, [a for a in answers if a.adapter == adapter], adapter)
    baseline = None
    if persona is not None:
        p = ctx.scorer.get_persona(persona)
        baseline = drift.Baseline.from_exemplars(p.loo_distances, p.exemplar_dims)
    state, reports = None, []
    for a in answers:
        obs = drift.Observation(
            persona_distance=a.personas.get(persona, {}).get("distance") if persona else None,
            formality=a.tone["formality"],
            politeness=a.tone["politeness"],
            warmth=a.tone["warmth"],
        )
        state, report = drift.update(state, obs, baseline, drift_params)
        reports.append(report.public())
    return SessionResult([adapter for adapter, _ in plan], persona, answers, reports)


def session_plans(prompts: list[list[dict[str, str]]], sessions: int, turns: int) -> list[list[str]]:
    """User messages per session: consecutive held-out questions, a different one every turn (wrapping around)."""
    users = [_user_text(p) for p in prompts]
    return [[users[(s * turns + t) % len(users)] for t in range(turns)] for s in range(sessions)]


# ---- the report ---------------------------------------------------------------------------------------------------


def summarize(
    name: str,
    answers: list[Answer],
    sessions: list[SessionResult],
    wall_s: float,
    personas: list[str],
    own_persona: str | None,
) -> dict[str, Any]:
    labels = Counter(a.tone["label"] for a in answers)
    n = len(answers)
    everything = answers + [a for s in sessions for a in s.answers]
    latencies = [a.total_s for a in everything]
    ttft = [a.ttft_s for a in everything]
    tokens = sum(a.completion_tokens for a in answers)
    per_request_rate = [a.completion_tokens / a.total_s for a in everything if a.total_s > 0]
    dims = {
        d: {"mean": _mean([a.tone[d] for a in answers]), "std": _std([a.tone[d] for a in answers])} for d in DIMENSIONS
    }
    match = {p: _mean([float(a.personas[p]["match"]) for a in answers]) for p in personas}
    distance = {p: _mean([a.personas[p]["distance"] for a in answers]) for p in personas}
    dispersion = [s.drift[-1]["dispersion"] for s in sessions if s.drift]
    session_std = [
        float(np.mean([np.std([a.tone[d] for a in s.answers]) for d in DIMENSIONS]))
        for s in sessions
        if len(s.answers) >= 2
    ]
    return {
        "name": name,
        "persona": own_persona,
        "answers": n,
        "labels": {label: labels.get(label, 0) for label in LABELS},
        "label_share": {label: labels.get(label, 0) / n if n else 0.0 for label in LABELS},
        "top_label": labels.most_common(1)[0][0] if labels else None,
        "persona_match_rate": match,
        "persona_distance_mean": distance,
        "dimensions": dims,
        "dispersion_mean": _mean(dispersion),
        "session_dim_std_mean": _mean(session_std),
        "sessions": len(sessions),
        "sessions_alerted": sum(s.alerted for s in sessions),
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p99_s": _percentile(latencies, 99),
        "ttft_p50_s": _percentile(ttft, 50),
        "requests": len(everything),
        "tokens_per_s": tokens / wall_s if wall_s > 0 else None,
        "request_tokens_per_s_p50": _percentile(per_request_rate, 50),
        "completion_tokens_mean": _mean([a.completion_tokens for a in answers]),
        "finished_by_length": sum(a.finish_reason == "length" for a in answers),
        "quality": {
            "empty": sum(not a.text.strip() for a in everything),
            "collapsed": sum(a.quality["collapsed"] for a in everything),
            "distinct2_mean": _mean([a.quality["distinct2"] for a in everything]),
            "max_ngram_repeat": max((a.quality["max_ngram_repeat"] for a in everything), default=0),
        },
    }


async def run_adapter(
    ctx: EvalContext,
    name: str,
    prompts: list[list[dict[str, str]]],
    sessions: int,
    turns: int,
    max_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Single-turn answers to every prompt (all submitted at once) and the simulated sessions (concurrently), scored.
    Returns {"summary", "answers", "sessions"}."""
    params = sampling(max_tokens, temperature)
    started = time.perf_counter()
    answers = await asyncio.gather(
        *(
            generate(ctx, name, p, sampling(max_tokens, temperature, seed + i) if temperature > 0 else params)
            for i, p in enumerate(prompts)
        )
    )
    wall = time.perf_counter() - started
    await score_answers(ctx, list(answers), name)
    persona = ctx.persona_for(name)
    plans = session_plans(prompts, sessions, turns) if sessions and turns else []
    results = await asyncio.gather(
        *(run_session(ctx, [(name, user) for user in plan], persona, params) for plan in plans)
    )
    summary = summarize(name, list(answers), list(results), wall, sorted(ctx.scorer.personas), persona)
    return {"summary": summary, "answers": list(answers), "sessions": list(results)}


async def evaluate(
    adapters: list[str],
    prompts: list[list[dict[str, str]]],
    sessions: int,
    turns: int,
    max_tokens: int,
    out_dir: str | Path | None = DEFAULT_OUT,
    *,
    adapter_root: Path | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    max_batch_size: int | None = None,
    prompts_source: str | None = None,
    context: EvalContext | None = None,
) -> dict[str, Any]:
    """Run the comparison and (when ``out_dir`` is set) write report.json, report.md and the plots there.
    Adapters run one after another so each one's latency is measured on its own; within an adapter all prompts
    (and all sessions) are in flight together and the engine batches them."""
    if not adapters:
        raise ValueError("no adapters to evaluate")
    if not prompts:
        raise ValueError("no prompts")
    ctx = context or await build_context(adapters, adapter_root, max_batch_size=max_batch_size)
    started = time.perf_counter()
    try:
        runs = {}
        for name in adapters:
            log.info("evaluating %s: %d prompts, %d sessions x %d turns", name, len(prompts), sessions, turns)
            runs[name] = await run_adapter(ctx, name, prompts, sessions, turns, max_tokens, temperature, seed)
    finally:
        if context is None:
            close_context(ctx)
    report = {
        "meta": {
            "base_model": ctx.base_name,
            "device": ctx.device,
            "platform": ctx.platform,
            "adapters": adapters,
            "prompts": len(prompts),
            "prompts_source": prompts_source,
            "sessions": sessions,
            "turns": turns,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "max_batch_size": ctx.engine.max_batch_size,
            "personas": sorted(ctx.scorer.personas),
            "duration_s": round(time.perf_counter() - started, 1),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "adapters": {name: run["summary"] for name, run in runs.items()},
        "answers": {
            name: [
                {
                    "prompt": _user_text(a.messages),
                    "answer": a.text,
                    "finish_reason": a.finish_reason,
                    "completion_tokens": a.completion_tokens,
                    **a.tone,
                    "personas": a.personas,
                    "quality": a.quality,
                }
                for a in run["answers"]
            ]
            for name, run in runs.items()
        },
        "sessions": {name: [s.public() for s in run["sessions"]] for name, run in runs.items()},
    }
    if out_dir is not None:
        write_report(report, Path(out_dir))
    return report


# ---- output -------------------------------------------------------------------------------------------------------


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
        "Answers are scored by the tone scorer (`models/style`); an adapter named like a shipped persona is judged "
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


# ---- CLI ----------------------------------------------------------------------------------------------------------


def load_prompts(path: str | Path) -> list[list[dict[str, str]]]:
    prompts = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                if not row.get("messages"):
                    raise ValueError(f"{path}: every line needs a non-empty 'messages' list")
                prompts.append(row["messages"])
    return prompts


def build_parser() -> argparse.ArgumentParser:
    from app.cli import DefaultsHelpFormatter

    p = argparse.ArgumentParser(
        prog="tonewatch eval",
        description="Compare adapters on held-out prompts (`tonewatch eval --suite stress --help`: the stress suite).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--suite",
        choices=("report", "stress"),
        default="report",
        help="report: this comparison; stress: the tone-consistency stress suite (its own options)",
    )
    p.add_argument(
        "--adapters",
        required=True,
        help="comma-separated adapter names; 'base' (or the base model's name) is the model without an adapter",
    )
    p.add_argument(
        "--prompts", default="data/support/heldout_questions.jsonl", help="JSONL file with a 'messages' list per line"
    )
    p.add_argument("--sessions", type=int, default=4, help="simulated multi-turn sessions per adapter")
    p.add_argument("--turns", type=int, default=4, help="turns per session")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens generated per answer at most")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (reproducible)")
    p.add_argument("--seed", type=int, default=0, help="per-request seeds (seed + index) when sampling")
    p.add_argument("--limit", type=int, help="use only the first N prompts (default: all)")
    p.add_argument("--max-batch-size", type=int, help="engine batch size (default: the server setting)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (report.md, report.json, PNGs)")
    p.add_argument(
        "--adapter-root", help="folder the adapters (and manifest.json) live in (default: TONEWATCH_ADAPTER_ROOT)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    adapters = [a.strip() for a in args.adapters.split(",") if a.strip()]
    prompts = load_prompts(args.prompts)[: args.limit] if args.limit else load_prompts(args.prompts)
    report = asyncio.run(
        evaluate(
            adapters,
            prompts,
            args.sessions,
            args.turns,
            args.max_tokens,
            args.out,
            adapter_root=Path(args.adapter_root) if args.adapter_root else None,
            temperature=args.temperature,
            seed=args.seed,
            max_batch_size=args.max_batch_size,
            prompts_source=str(args.prompts),
        )
    )
    for name, s in report["adapters"].items():
        print(
            f"{name}: top label {s['top_label']} ({_pct(s['label_share'][s['top_label']])}), drift alerts "
            f"{s['sessions_alerted']}/{s['sessions']}, p50 {_f(s['latency_p50_s'], 2)} s, "
            f"collapsed {s['quality']['collapsed']}"
        )
    print(f"wrote {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
