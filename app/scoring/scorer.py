"""ToneScorer: texts -> tone reports, on its own single worker thread (never on the event loop, never more than
one torch job at a time beside the generation worker).

Batching and fairness: concurrent calls are micro-batched into one encoder batch. Work comes in two lanes: small
calls (a chat reply, a few posted texts) are *interactive*; a large /v1/score call is cut into bounded chunks on
the *bulk* lane. Each encoder batch takes every waiting interactive job plus at most one bulk chunk, so a chat
reply never waits behind more than one chunk of somebody's bulk upload.

Isolation: when a batch fails, its jobs are retried one by one, so a text that breaks the encoder fails only the
call that sent it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import InvalidRequest, NotFound
from app.metrics import Metrics
from app.scoring.embedder import Embedder, encoder_lora
from app.scoring.labels import DIMENSIONS
from app.scoring.model import StyleHead
from app.scoring.normalize import normalize
from app.scoring.personas import Persona, calibrate, load_shipped
from app.system import one_torch_thread, usable_cores

log = logging.getLogger("tonewatch.scorer")
MIN_EXEMPLARS = 5
# A call is interactive up to this size; bigger calls are cut into bulk chunks of at most these bounds.
INTERACTIVE_TEXTS = 4
CHUNK_TEXTS = 16
CHUNK_CHARS = 6000


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


def clean_text(text: str) -> str:
    """Text the tokenizer can take: lone surrogates (from broken JSON escapes) become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def chunks(texts: list[str], max_texts: int = CHUNK_TEXTS, max_chars: int = CHUNK_CHARS) -> list[list[str]]:
    out: list[list[str]] = []
    current: list[str] = []
    size = 0
    for text in texts:
        if current and (len(current) >= max_texts or size + len(text) > max_chars):
            out.append(current)
            current, size = [], 0
        current.append(text)
        size += len(text)
    if current:
        out.append(current)
    return out


WIDE_BATCH = 8  # auto threads: encoder batches of at least this many texts use every core


class ToneScorer:
    def __init__(self, head: StyleHead, embedder: Embedder, metrics: Metrics, threads: int = 0):
        self.head = head
        self.embedder = embedder
        self.metrics = metrics
        self.personas: dict[str, Persona] = {}
        # threads 0 (auto): one torch thread for the few texts of chat replies, where the engine's forwards own
        # the cores; every core for bulk /v1/score batches (one thread gave 119 texts/s at batch 32 here, two
        # 201), run on a short-lived thread so its OpenMP team ends with it (app.system.one_torch_thread says why
        # a lasting second team slows the engine). A fixed number overrides it.
        self.threads = threads
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tonewatch-scorer", initializer=one_torch_thread
        )
        self._interactive: deque[_Job] = deque()
        self._bulk: deque[_Job] = deque()
        self._lock = threading.Lock()
        self.batches = 0  # encoder batches run (tests check that concurrent calls really share them)

    @classmethod
    def load(
        cls, metrics: Metrics, style_dir: Path, persona_dir: Path, device: str = "cpu", threads: int = 0
    ) -> ToneScorer:
        scorer = cls(StyleHead.load(style_dir), Embedder(device, encoder_lora(style_dir)), metrics, threads=threads)
        for persona in load_shipped(persona_dir):
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
        texts = [normalize(clean_text(t)) for t in persona.exemplars]
        predictions = self.head.predict(texts, self.embedder.encode(texts))
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
            report.update(
                persona=persona.name,
                persona_distance=round(distance, 4),
                persona_match=bool(distance <= persona.threshold),
            )
        if include_embedding:
            report["style_embedding"] = [round(float(v), 5) for v in p.style]
        return report

    def _threads_for(self, texts: int) -> int:
        return self.threads or (usable_cores() if texts >= WIDE_BATCH else 1)

    def _predict_on(self, threads: int, texts: list[str]):
        """Scorer thread: predictions on this thread (one torch thread) or, wider, on a thread that exits after."""
        if threads <= 1:
            return self._predict(texts)
        result: dict[str, Any] = {}

        def wide() -> None:
            import torch

            torch.set_num_threads(threads)
            try:
                result["value"] = self._predict(texts)
            except BaseException as exc:  # handed back to the scorer thread, which answers the jobs
                result["error"] = exc

        worker = threading.Thread(target=wide, name="tonewatch-scorer-wide", daemon=True)
        worker.start()
        worker.join()
        if "error" in result:
            raise result["error"]
        return result["value"]

    def _predict(self, texts: list[str]):
        # features and embedding both see the normalised text: typography, ids and amounts carry no tone
        cleaned = [normalize(clean_text(t)) for t in texts]
        return self.head.predict(cleaned, self.embedder.encode(cleaned))

    def _take(self) -> list[_Job]:
        with self._lock:
            jobs = list(self._interactive)
            self._interactive.clear()
            if self._bulk:
                jobs.append(self._bulk.popleft())
        return jobs

    def _drain(self) -> None:
        """Scoring thread: one encoder batch for every waiting interactive job plus at most one bulk chunk."""
        jobs = self._take()
        if not jobs:
            return
        self.batches += 1
        texts = [t for job in jobs for t in job.texts]
        try:
            # inside the try: whatever fails here, every job still gets its answer
            predictions = self._predict_on(self._threads_for(len(texts)), texts)
        except Exception as exc:
            if len(jobs) == 1:
                log.warning("scoring failed: %r", exc)
                jobs[0].loop.call_soon_threadsafe(_settle, jobs[0].future, None, exc)
                return
            self._one_by_one(jobs)
            return
        start = 0
        for job in jobs:
            chunk = predictions[start : start + len(job.texts)]
            start += len(job.texts)
            self._deliver(job, chunk)

    def _one_by_one(self, jobs: list[_Job]) -> None:
        for job in jobs:
            try:
                predictions = self._predict(job.texts)
            except Exception as exc:  # this call's texts alone
                log.warning("scoring failed for one call: %r", exc)
                job.loop.call_soon_threadsafe(_settle, job.future, None, exc)
                continue
            self._deliver(job, predictions)

    def _deliver(self, job: _Job, predictions) -> None:
        try:
            reports = [self._report(p, job.persona, job.include_embedding) for p in predictions]
        except Exception as exc:
            job.loop.call_soon_threadsafe(_settle, job.future, None, exc)
            return
        job.loop.call_soon_threadsafe(_settle, job.future, reports, None)

    async def score(
        self, texts: list[str], *, persona: str | None = None, label: str = "external", include_embedding: bool = False
    ) -> list[dict[str, Any]]:
        """Tone reports for texts, in order. `label` is the bounded metric label of where they came from."""
        chosen = self.get_persona(persona)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        interactive = len(texts) <= INTERACTIVE_TEXTS and sum(map(len, texts)) <= CHUNK_CHARS
        parts = [texts] if interactive else chunks(texts)
        jobs = [_Job(part, chosen, include_embedding, loop, loop.create_future()) for part in parts]
        with self._lock:
            (self._interactive if interactive else self._bulk).extend(jobs)
        for _ in jobs:
            self._pool.submit(self._drain)
        try:
            results = await asyncio.gather(*(job.future for job in jobs))
        except BaseException:
            for job in jobs:  # a failed or abandoned call: drop its queued chunks
                if not job.future.done():
                    job.future.cancel()
            with self._lock:
                for job in jobs:
                    if job in self._bulk:
                        self._bulk.remove(job)
            raise
        reports = [r for part in results for r in part]
        self.metrics.scoring_seconds.observe(time.perf_counter() - started)
        self._observe(reports, label, chosen)
        return reports

    def _observe(self, reports: list[dict[str, Any]], label: str, persona: Persona | None) -> None:
        persona_label = persona.name if persona else "none"
        m = self.metrics
        for r in reports:
            m.tone_labels.labels(label, persona_label, r["label"]).inc()
            for dim in DIMENSIONS:
                m.tone_dimension.labels(label, dim).observe(r[dim])
            if persona is not None:
                m.persona_distance.labels(label, persona_label).observe(r["persona_distance"])
                if not r["persona_match"]:
                    m.persona_mismatch.labels(label, persona_label).inc()
