"""Drive the serving stack over the prompts for `tonewatch eval`: build the server's own stack (app.stack), send every
prompt through every requested adapter (concurrently, so the engine batches them), score every answer and simulate
multi-turn sessions with the drift detector, filling the records of app.evaluation.report_records. ``evaluate``
assembles the report (app.evaluation.report_summary gives the per-adapter statistics, report_render writes it).

Answers are scored against the persona of the same name as the adapter when there is one (support-friendly ->
persona support-friendly), else without a persona; drift then uses that persona's exemplars as the baseline, or
the session's own first turns when there is none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.evaluation.report_records import Answer, SessionResult
from app.evaluation.report_render import write_report
from app.evaluation.report_summary import summarize, text_quality
from app.scoring.labels import DIMENSIONS
from app.scoring.model import head_version

log = logging.getLogger("tonewatch.eval")

BASE_ALIASES = ("base",)
DEFAULT_OUT = Path(__file__).resolve().parent.parent.parent / "bench" / "results" / "eval"


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
    scorer_release: str = ""  # the scorer version (TONEWATCH_SCORER) the answers are judged by
    scorer_head: str = ""  # and its head's content hash (app.scoring.model.head_version)

    def adapter_for(self, name: str) -> str | None:
        """Engine adapter for a report name: None for the base model."""
        return None if name in (*BASE_ALIASES, self.base_name) else name

    def persona_for(self, name: str) -> str | None:
        return name if name in self.scorer.personas else None


async def build_context(
    adapters: list[str], adapter_root: Path | None = None, *, max_batch_size: int | None = None, settings: Any = None
) -> EvalContext:
    """The server's own stack (app.stack: the model as configured, quantization, output head, engine threads, prefix
    cache, adapter registry, scorer; each CPU path chosen by measurement as at server start-up) with the named
    adapters loaded. Only the queue differs: an offline run submits everything at once and waits as long as it
    takes. Adapter paths come from the adapter root's manifest.json, else the folder of the same name."""
    from app.config import Settings
    from app.engine.adapters import read_manifest
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
        paths, _ = read_manifest(root)
        for name in adapters:
            if ctx.adapter_for(name) is not None and name not in stack.registry.adapters:
                await stack.registry.load(name, paths.get(name, name))
                ctx.loaded.append(name)
        ctx.scorer = await load_scorer(settings, metrics, platform)
    except BaseException:
        stack.engine.stop()
        raise
    ctx.platform = platform.as_dict()
    ctx.scorer_release, ctx.scorer_head = settings.scorer, head_version(settings.style_dir)
    return ctx


def close_context(ctx: EvalContext) -> None:
    if ctx.scorer is not None:
        ctx.scorer.close()
    ctx.engine.stop()


# ---- generation ---------------------------------------------------------------------------------------------------


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


def user_text(prompt: list[dict[str, str]]) -> str:
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
    users = [user_text(p) for p in prompts]
    return [[users[(s * turns + t) % len(users)] for t in range(turns)] for s in range(sessions)]


# ---- the run ------------------------------------------------------------------------------------------------------


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
            "scorer": f"{ctx.scorer_release}, head {ctx.scorer_head}" if ctx.scorer_head else "",
            "duration_s": round(time.perf_counter() - started, 1),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "adapters": {name: run["summary"] for name, run in runs.items()},
        "answers": {
            name: [
                {
                    "prompt": user_text(a.messages),
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
