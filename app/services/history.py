"""Session history flow: a scored turn -> drift update (atomic, in the store; see session_drift.py for outages)
-> latency spikes -> record (never lost: the resilient wrapper spills locally when the store is down) -> metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from app.errors import NotFound, StoreDown
from app.metrics import Metrics
from app.monitor import drift
from app.monitor.latency import LatencySpikeDetector
from app.scoring.personas import Persona
from app.services.session_drift import SessionDrift, observation_of
from app.store.base import SessionStore, StoreUnavailable, Turn, session_state_key
from app.store.spill import ResilientHistory

log = logging.getLogger("tonewatch.history")
ACTIVE_WINDOW_S = 3600.0
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
LONG_NUMBER = re.compile(r"\+?\d[\d -]{7,}\d")


def redact(text: str) -> str:
    return LONG_NUMBER.sub("[number]", EMAIL.sub("[email]", text))


@dataclass
class TurnInput:
    session_id: str
    source: str  # what produced the response: an adapter, the base model, an upstream model, a /v1/score caller
    label: str  # the bounded metric label for `source`
    persona: Persona | None
    prompt: str | None
    response: str
    tone: dict[str, Any] | None  # None: nothing to score (a tool-call-only answer); no drift update
    latency: dict[str, float] = field(default_factory=dict)
    request_id: str = ""
    finish_reason: str | None = None
    delivered: bool | None = None
    kind: str = "chat"


class HistoryService:
    def __init__(
        self,
        store: SessionStore,
        spill: ResilientHistory,
        sessions: SessionDrift,
        metrics: Metrics,
        *,
        prompt_chars: int = 2000,
        redact_text: bool = False,
        replica: str = "replica",
    ):
        self.replica = replica  # the `replica` label of the per-replica stream metrics
        self.store = store
        self.spill = spill
        self.drift = sessions
        self.metrics = metrics
        self.prompt_chars = prompt_chars
        self.redact_text = redact_text
        self.params = sessions.params
        self.spikes = LatencySpikeDetector()
        self._streams: dict[tuple[str, str], dict] = {}  # per (label, persona) detector state, per replica
        self._sessions: OrderedDict[str, tuple[float, bool]] = OrderedDict()  # last turn time, in alert

    # ---- write path -----------------------------------------------------------------------------------------
    async def observe(self, turn_in: TurnInput) -> dict[str, Any] | None:
        """Record one turn; return the drift block for the response (None for a turn without a tone)."""
        started = time.perf_counter()
        ts = time.time()
        request_id = turn_in.request_id or uuid.uuid4().hex
        persona_label = turn_in.persona.name if turn_in.persona else "none"
        spikes = self._spikes(turn_in.label, turn_in.latency)
        report: drift.DriftReport | None = None
        provisional = pending = False
        if turn_in.tone is not None:
            observation = observation_of(turn_in.tone)
            baseline = self.drift.baseline(turn_in.persona)
            report, provisional = await self.drift.update(
                turn_in.session_id,
                request_id,
                observation,
                baseline,
                ts,
                behind_spill=self.spill.pending(turn_in.session_id),
            )
            pending = provisional
            self._update_stream(turn_in.label, persona_label, observation, baseline)
            previous = self._sessions.get(turn_in.session_id, (0.0, False))[1]
            if report.alert and not previous:
                self.metrics.drift_alerts.labels(turn_in.label, persona_label).inc()
            self._touch(turn_in.session_id, report.alert)
        drift_public = report.public() if report else None
        await self.spill.record(
            Turn(
                session_id=turn_in.session_id,
                request_id=request_id,
                ts=ts,
                adapter=turn_in.source,
                persona=turn_in.persona.name if turn_in.persona else None,
                prompt=self._clean(turn_in.prompt, self.prompt_chars),
                response=self._clean(turn_in.response, None) or "",
                tone=turn_in.tone or {},
                latency=turn_in.latency,
                drift=drift_public,
                spikes=spikes,
                finish_reason=turn_in.finish_reason,
                delivered=turn_in.delivered,
                kind=turn_in.kind,
                state_pending=pending,
            )
        )
        self.metrics.history_write_seconds.observe(time.perf_counter() - started)
        if drift_public is None:
            return None
        block = {**drift_public, "spikes": spikes}
        if provisional:
            block["provisional"] = True  # computed on this replica's copy while the store was unreachable
        return block

    def _clean(self, text: str | None, limit: int | None) -> str | None:
        if text is None or limit == 0:
            return None
        if self.redact_text:
            text = redact(text)
        return text if limit is None else text[:limit]

    def _update_stream(self, label: str, persona: str, obs: drift.Observation, baseline: drift.Baseline | None) -> None:
        state, report = drift.update(self._streams.get((label, persona)), obs, baseline, self.params)
        self._streams[(label, persona)] = state
        self.metrics.drift_score.labels(label, persona, self.replica).set(report.score)

    def _spikes(self, label: str, latency: dict[str, float]) -> list[str]:
        flagged = []
        total, tokens = latency.get("total_s"), latency.get("tokens")
        checks = [("total", total)]
        if total and tokens:
            checks.append(("per_token", total / tokens))
        for kind, value in checks:
            if value is None:
                continue
            if self.spikes.observe((label, kind), float(value)).spike:
                flagged.append(kind)
                self.metrics.latency_spikes.labels(label, kind, self.replica).inc()
        return flagged

    def _touch(self, session_id: str, alert: bool) -> None:
        now = time.time()
        self._sessions[session_id] = (now, alert)
        self._sessions.move_to_end(session_id)
        while self._sessions:
            oldest, (ts, _) = next(iter(self._sessions.items()))
            if now - ts <= ACTIVE_WINDOW_S:
                break
            del self._sessions[oldest]
        self.metrics.sessions_active.set(len(self._sessions))
        self.metrics.sessions_drifting.set(sum(1 for _, a in self._sessions.values() if a))

    # ---- read path ------------------------------------------------------------------------------------------
    async def session(self, session_id: str, after: int, limit: int) -> dict[str, Any]:
        try:
            turns = await self.store.get_turns(session_id, after=after, limit=limit + 1)
            state = await self.store.get_state(session_state_key(session_id, "drift"))
        except StoreUnavailable as exc:
            raise StoreDown("session store is unavailable; turns are kept locally and replayed later") from exc
        if not turns and after == 0 and state is None:
            raise NotFound(f"session {session_id!r} has no recorded turns", param="session_id")
        more = len(turns) > limit
        turns = turns[:limit]
        return {
            "object": "session",
            "session_id": session_id,
            "turns": [_public_turn(t) for t in turns],
            "next_cursor": turns[-1].seq if more and turns else None,
            "drift": drift.view(state, self.params),
            "pending_turns": self.spill.pending_count(session_id),
        }

    async def drift_state(self, session_id: str) -> dict[str, Any]:
        try:
            state = await self.store.get_state(session_state_key(session_id, "drift"))
        except StoreUnavailable as exc:
            raise StoreDown("session store is unavailable") from exc
        if state is None:
            raise NotFound(f"session {session_id!r} has no recorded turns", param="session_id")
        return {"session_id": session_id, **drift.view(state, self.params)}

    async def delete(self, session_id: str) -> bool:
        try:
            existed = await self.spill.delete_session(session_id)
        except StoreUnavailable as exc:
            raise StoreDown("session store is unavailable; nothing was deleted") from exc
        self.drift.forget(session_id)
        self._sessions.pop(session_id, None)
        return existed


def _public_turn(turn: Turn) -> dict[str, Any]:
    data = turn.to_dict()
    data.pop("state_pending", None)
    return data
