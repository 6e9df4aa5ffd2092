"""ToneScorer: texts -> tone reports. Runs on its own single worker thread so scoring is batched per call,
never on the event loop, and never more than one torch job at a time beside the generation worker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass
from typing import Any

from app.errors import InvalidRequest, NotFound
from app.metrics import Metrics
from app.scoring.embedder import Embedder
from app.scoring.model import DIMENSIONS, StyleHead
from app.scoring.personas import Persona, calibrate, load_shipped

MIN_EXEMPLARS = 5


@dataclass
class _Job:
    texts: list[str]
    persona: Persona | None
    include_embedding: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ToneScorer:
    def __init__(self, head: StyleHead, embedder: Embedder, metrics: Metrics):
        self.head = head
        self.embedder = embedder
        self.metrics = metrics
        self.personas: dict[str, Persona] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tonewatch-scorer")
        self._jobs: list[_Job] = []
        self._lock = threading.Lock()

    @classmethod
    def load(cls, metrics: Metrics, device: str = "cpu") -> ToneScorer:
        scorer = cls(StyleHead.load(), Embedder(device), metrics)
        for persona in load_shipped():
            scorer._calibrate(persona)
            scorer.personas[persona.name] = persona
        return scorer

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # ---- personas -------------------------------------------------------------------------------------------
    def _calibrate(self, persona: Persona) -> Persona:
        if len(persona.exemplars) < MIN_EXEMPLARS:
            raise InvalidRequest(f"a persona needs at least {MIN_EXEMPLARS} exemplars", param="exemplars")
        predictions = self.head.predict(persona.exemplars, self.embedder.encode(persona.exemplars))
        return calibrate(persona, predictions, self.head.style_weights["dims"])

    async def build_persona(self, persona: Persona) -> Persona:
        """Calibrate off the event loop; the caller decides whether to install it (so a failure changes nothing)."""
        return await self._run(self._calibrate, persona)

    def get_persona(self, name: str | None) -> Persona | None:
        if name is None:
            return None
        persona = self.personas.get(name)
        if persona is None:
            raise NotFound(f"persona {name!r} does not exist; GET /admin/personas lists them", param="persona")
        return persona

    # ---- scoring --------------------------------------------------------------------------------------------
    def _report(self, p, persona: Persona | None, include_embedding: bool) -> dict[str, Any]:
        report: dict[str, Any] = {"label": p.label, "probs": p.probs, **p.dims}
        if persona is not None:
            distance = persona.distance(p.style)
            report.update(persona=persona.name, persona_distance=round(distance, 4),
                          persona_match=bool(distance <= persona.threshold))
        if include_embedding:
            report["style_embedding"] = [round(float(v), 5) for v in p.style]
        return report

    def _score(self, texts: list[str], persona: Persona | None, include_embedding: bool) -> list[dict[str, Any]]:
        predictions = self.head.predict(texts, self.embedder.encode(texts))
        return [self._report(p, persona, include_embedding) for p in predictions]

    def _drain(self) -> None:
        """Scoring thread: score every job queued so far in one encoder batch (concurrent chat completions each
        bring one text; batched, 16 texts cost about what 4 cost one by one)."""
        with self._lock:
            jobs, self._jobs = self._jobs, []
        if not jobs:
            return
        try:
            texts = [t for job in jobs for t in job.texts]
            predictions = self.head.predict(texts, self.embedder.encode(texts))
        except Exception as exc:  # handed to every waiting caller
            for job in jobs:
                job.loop.call_soon_threadsafe(_settle, job.future, None, exc)
            return
        start = 0
        for job in jobs:
            chunk = predictions[start:start + len(job.texts)]
            start += len(job.texts)
            reports = [self._report(p, job.persona, job.include_embedding) for p in chunk]
            job.loop.call_soon_threadsafe(_settle, job.future, reports, None)

    async def score(self, texts: list[str], *, persona: str | None = None, adapter: str = "external",
                    include_embedding: bool = False) -> list[dict[str, Any]]:
        chosen = self.get_persona(persona)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        job = _Job(texts, chosen, include_embedding, loop, loop.create_future())
        with self._lock:
            self._jobs.append(job)
        self._pool.submit(self._drain)
        reports = await job.future
        self.metrics.scoring_seconds.observe(time.perf_counter() - started)
        self._observe(reports, adapter, chosen)
        return reports

    def _observe(self, reports: list[dict[str, Any]], adapter: str, persona: Persona | None) -> None:
        persona_label = persona.name if persona else "none"
        m = self.metrics
        for r in reports:
            m.tone_labels.labels(adapter, persona_label, r["label"]).inc()
            for dim in DIMENSIONS:
                m.tone_dimension.labels(adapter, dim).observe(r[dim])
            if persona is not None:
                m.persona_distance.labels(adapter, persona_label).observe(r["persona_distance"])
                if not r["persona_match"]:
                    m.persona_mismatch.labels(adapter, persona_label).inc()

