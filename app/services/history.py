"""Session history flow: a scored turn -> drift update (atomic, in the store) -> latency spikes -> record (never
lost: the resilient wrapper spills locally when the store is down) -> metrics."""

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
from app.store.base import SessionStore, StoreUnavailable, Turn, session_state_key
from app.store.spill import ResilientHistory

log = logging.getLogger("tonewatch.history")
ACTIVE_WINDOW_S = 3600.0
LOCAL_STATE_LIMIT = 10_000
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
LONG_NUMBER = re.compile(r"\+?\d[\d -]{7,}\d")


def redact(text: str) -> str:
    return LONG_NUMBER.sub("[number]", EMAIL.sub("[email]", text))


@dataclass
class TurnInput:
    session_id: str
    adapter: str
    persona: Persona | None
    prompt: str | None
    response: str
    tone: dict[str, Any]
    latency: dict[str, float] = field(default_factory=dict)
    request_id: str = ""


class HistoryService:
    def __init__(self, store: SessionStore, history: ResilientHistory, metrics: Metrics, *,
                 prompt_chars: int = 2000, redact_text: bool = False, params: drift.DriftParams | None = None):
        self.store = store
        self.history = history
        self.metrics = metrics
        self.prompt_chars = prompt_chars
        self.redact_text = redact_text
        self.params = params or drift.DriftParams()
        self.spikes = LatencySpikeDetector()
        self._streams: dict[tuple[str, str], dict] = {}  # per (adapter, persona) detector state, per replica
        self._sessions: OrderedDict[str, tuple[float, bool]] = OrderedDict()  # last turn time, in alert
        self._local_state: OrderedDict[str, dict] = OrderedDict()  # fallback while the store is down
        self._baselines: dict[str, tuple[int, drift.Baseline]] = {}
        drift.thresholds(self.params)  # calibrate now (~0.3 s), not on the first request

    # ---- write path -----------------------------------------------------------------------------------------
    async def observe(self, turn_in: TurnInput) -> dict[str, Any]:
        """Record one turn; return the drift block for the response."""
        started = time.perf_counter()
        tone = turn_in.tone
        observation = drift.Observation(persona_distance=tone.get("persona_distance"), formality=tone["formality"],
                                        politeness=tone["politeness"], warmth=tone["warmth"])
        baseline = self._baseline(turn_in.persona)
        report = await self._update_session(turn_in.session_id, observation, baseline)
        persona_label = turn_in.persona.name if turn_in.persona else "none"
        self._update_stream(turn_in.adapter, persona_label, observation, baseline)
        spikes = self._spikes(turn_in.adapter, turn_in.latency)
        previous = self._sessions.get(turn_in.session_id, (0.0, False))[1]
        if report.alert and not previous:
            self.metrics.drift_alerts.labels(turn_in.adapter, persona_label).inc()
        self._touch(turn_in.session_id, report.alert)
        drift_block = {**report.public(), "spikes": spikes}
        await self.history.record(Turn(
            session_id=turn_in.session_id, request_id=turn_in.request_id or uuid.uuid4().hex, ts=time.time(),
            adapter=turn_in.adapter, persona=turn_in.persona.name if turn_in.persona else None,
            prompt=self._clean(turn_in.prompt, self.prompt_chars), response=self._clean(turn_in.response, None),
            tone=tone, latency=turn_in.latency, drift=report.public(), spikes=spikes,
        ))
        self.metrics.history_write_seconds.observe(time.perf_counter() - started)
        return drift_block

    def _clean(self, text: str | None, limit: int | None) -> str | None:
        if text is None or limit == 0:
            return None
        if self.redact_text:
            text = redact(text)
        return text if limit is None else text[:limit]

    def _baseline(self, persona: Persona | None) -> drift.Baseline | None:
        if persona is None:
            return None
        cached = self._baselines.get(persona.name)
        if cached is None or cached[0] != id(persona):  # a persona redefined via the API gets a new baseline
            baseline = drift.Baseline.from_exemplars(persona.loo_distances, persona.exemplar_dims)
            self._baselines[persona.name] = cached = (id(persona), baseline)
        return cached[1]

    async def _update_session(self, session_id: str, obs: drift.Observation,
                              baseline: drift.Baseline | None) -> drift.DriftReport:
        key = session_state_key(session_id, "drift")
        holder: dict[str, drift.DriftReport] = {}

        def step(state: dict | None) -> dict:
            new_state, holder["report"] = drift.update(state, obs, baseline, self.params)
            return new_state

        try:
            new_state = await self.store.update_state(key, step)
        except StoreUnavailable:
            # keep detecting on this replica's copy; the store catches up on the next successful update
            new_state = step(self._local_state.get(key))
        self._local_state[key] = new_state
        self._local_state.move_to_end(key)
        while len(self._local_state) > LOCAL_STATE_LIMIT:
            self._local_state.popitem(last=False)
        return holder["report"]

    def _update_stream(self, adapter: str, persona: str, obs: drift.Observation,
                       baseline: drift.Baseline | None) -> None:
        state, report = drift.update(self._streams.get((adapter, persona)), obs, baseline, self.params)
        self._streams[(adapter, persona)] = state
        self.metrics.drift_score.labels(adapter, persona).set(report.score)

    def _spikes(self, adapter: str, latency: dict[str, float]) -> list[str]:
        flagged = []
        total, tokens = latency.get("total_s"), latency.get("tokens")
        checks = [("total", total)]
        if total and tokens:
            checks.append(("per_token", total / tokens))
        for kind, value in checks:
            if value is None:
                continue
            if self.spikes.observe((adapter, kind), float(value)).spike:
                flagged.append(kind)
                self.metrics.latency_spikes.labels(adapter, kind).inc()
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
        return {"object": "session", "session_id": session_id, "turns": [t.to_dict() for t in turns],
                "next_cursor": turns[-1].seq if more and turns else None, "drift": self._drift_view(state)}

    async def drift_state(self, session_id: str) -> dict[str, Any]:
        try:
            state = await self.store.get_state(session_state_key(session_id, "drift"))
        except StoreUnavailable as exc:
            raise StoreDown("session store is unavailable") from exc
        if state is None:
            raise NotFound(f"session {session_id!r} has no recorded turns", param="session_id")
        return {"session_id": session_id, **self._drift_view(state)}

    def _drift_view(self, state: dict | None) -> dict[str, Any]:
        return drift.view(state, self.params)

    async def delete(self, session_id: str) -> bool:
        try:
            existed = await self.store.delete_session(session_id)
        except StoreUnavailable as exc:
            raise StoreDown("session store is unavailable; nothing was deleted") from exc
        self._local_state.pop(session_state_key(session_id, "drift"), None)
        self._sessions.pop(session_id, None)
        return existed
