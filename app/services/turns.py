"""What happens after a response is generated (here or upstream): score its text -> record the turn -> drift.

The disconnect rule (README, "Sessions and drift"): every generation that reached the model is recorded exactly
once when the request names a session —
* completed: scored, recorded with `delivered` = whether the client was still connected when the response was
  complete (for a stream: when the last text chunk had been handed to the connection);
* stopped because the client went away: recorded once with `finish_reason: "cancelled"`, `delivered: false`, the
  text generated so far, and no tone (a cut-off answer would skew drift);
* failed: recorded once with `finish_reason: "error"` and no tone.
Recording runs in its own task, shielded from the request's cancellation, so a client that leaves while its turn
is being recorded cannot leave half a record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app.metrics import Metrics
from app.services.canary import Assignment, CanaryService
from app.services.history import HistoryService, TurnInput
from app.services.tone import ToneService
from app.telemetry import NO_TELEMETRY, Telemetry

log = logging.getLogger("tonewatch.turns")


@dataclass
class GeneratedTurn:
    session_id: str | None
    persona: str | None  # as requested (None: the adapter's own persona, else the default)
    source: str  # the model / adapter that produced it
    label: str  # bounded metric label for source
    adapter: str | None  # the serving adapter (persona fallback), None for the base or an upstream
    prompt: str | None
    text: str  # the text content to score ("" when the answer is only tool calls)
    finish_reason: str
    request_id: str
    latency: dict[str, float] = field(default_factory=dict)
    delivered: bool = True
    kind: str = "chat"
    score: bool = True  # False for cancelled / failed turns and tool-call-only answers
    tone_basis: str = "text"  # "json_string_values": a structured answer, judged on its string values
    experiment: Assignment | None = None  # the canary assignment, when this session is part of a canary rollout
    owner: str | None = None  # the client key's id (the session's owner when this turn creates it)


class TurnRecorder:
    def __init__(
        self,
        tone: ToneService,
        history: HistoryService | None,
        metrics: Metrics,
        *,
        canary: CanaryService,
        on_canary_decision: Callable[[str], Awaitable[None]],
        score_responses: bool = True,
        telemetry: Telemetry = NO_TELEMETRY,
    ):
        self.telemetry = telemetry  # tone evaluations as events of the generation's span; the history write a child
        self.tone = tone
        self.history = history
        self.metrics = metrics
        self.canary = canary
        self.on_canary_decision = on_canary_decision  # acts on a rollback / pass (the admin service)
        self.score_responses = score_responses
        self._tasks: set[asyncio.Task] = set()

    async def finish(self, turn: GeneratedTurn) -> dict[str, Any]:
        """Extension fields for the response: {"tone": ..., "drift": ...} (empty when scoring is off)."""
        task = asyncio.ensure_future(self._finish(turn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    def finish_in_background(self, turn: GeneratedTurn) -> None:
        """For turns whose client is gone (nobody waits for the answer)."""
        task = asyncio.ensure_future(self._finish(turn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    async def claim(self, session_id: str | None, owner: str | None) -> None:
        if self.history is not None:
            await self.history.claim(session_id, owner)

    async def drain(self, timeout_s: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def _finish(self, turn: GeneratedTurn) -> dict[str, Any]:
        if not self.score_responses:
            return {}
        out: dict[str, Any] = {}
        persona_name = self.tone.persona_for(turn.persona, turn.adapter)
        if persona_name not in self.tone.scorer.personas:
            persona_name = None  # deleted while this request was generating: score it without one
        tone = None
        if turn.score and turn.text.strip():
            [tone] = await self.tone.score([turn.text], persona=persona_name, label=turn.label)
            if turn.tone_basis != "text":
                tone = {**tone, "basis": turn.tone_basis}
            self.telemetry.evaluations(tone)
        out["tone"] = tone
        if turn.session_id and self.history is not None:
            with self.telemetry.span("tonewatch.history.write", {"gen_ai.conversation.id": turn.session_id}):
                out["drift"] = await self.history.observe(
                    TurnInput(
                        session_id=turn.session_id,
                        source=turn.source,
                        label=turn.label,
                        persona=self.tone.persona(persona_name),
                        prompt=turn.prompt,
                        response=turn.text,
                        tone=tone,
                        request_id=turn.request_id,
                        latency=turn.latency,
                        finish_reason=turn.finish_reason,
                        delivered=turn.delivered,
                        kind=turn.kind,
                        owner=turn.owner,
                    )
                )
            self.metrics.turns_recorded.labels("true" if turn.delivered else "false").inc()
            if turn.experiment is not None and turn.finish_reason not in ("cancelled", "error"):
                decision = await self.canary.observe(
                    turn.experiment, turn.session_id, tone, out.get("drift"), turn.latency.get("total_s")
                )
                if decision is not None:
                    log.warning("canary decision: %s", decision)
                    await self.on_canary_decision(decision)
        return out


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("recording a turn failed: %r", task.exception())
