"""Per-session drift state in the store, and what happens to it during store outages.

Normally a turn's drift update is one atomic read-modify-write of the session's state in the store (WATCH/MULTI on
Redis, BEGIN IMMEDIATE on SQLite), so turns of one session arriving at several replicas fold into one state.

While the store is unreachable (the circuit breaker is open), or while a session still has turns waiting in the
local spill, the update is computed on this replica's last known copy of the state and reported as `provisional`;
the turn is spilled with its update pending, and the replay applies the pending updates to the store's state in
order (`apply_pending`), so the state after recovery equals a run without the outage. Updates are idempotent per
request id (the state remembers the last few it applied), so a replay that is retried never counts a turn twice.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from app.monitor import drift
from app.scoring.personas import Persona
from app.store.base import SessionDeleted, StateStore, StoreUnavailable, Turn, session_state_key

LOCAL_STATE_LIMIT = 10_000
APPLIED_MEMORY = 32  # request ids remembered in a session's state, so a replayed update is applied once


def observation_of(tone: dict[str, Any]) -> drift.Observation:
    return drift.Observation(
        persona_distance=tone.get("persona_distance"),
        formality=tone["formality"],
        politeness=tone["politeness"],
        warmth=tone["warmth"],
    )


class SessionDrift:
    def __init__(
        self, store: StateStore, personas: Callable[[str], Persona | None], params: drift.DriftParams | None = None
    ):
        self.store = store
        self.personas = personas  # name -> Persona (None once deleted), to rebuild baselines on replay
        self.params = params or drift.DriftParams()
        self._local: OrderedDict[str, dict] = OrderedDict()  # last known state per session state key
        self._baselines: dict[str, tuple[int, drift.Baseline]] = {}
        drift.thresholds(self.params)  # calibrate now (~0.3 s), not on the first request

    def baseline(self, persona: Persona | None) -> drift.Baseline | None:
        if persona is None:
            return None
        cached = self._baselines.get(persona.name)
        if cached is None or cached[0] != id(persona):  # a persona redefined via the API gets a new baseline
            baseline = drift.Baseline.from_exemplars(persona.loo_distances, persona.exemplar_dims)
            self._baselines[persona.name] = cached = (id(persona), baseline)
        return cached[1]

    def _stepper(
        self,
        request_id: str,
        obs: drift.Observation,
        baseline: drift.Baseline | None,
        holder: dict[str, drift.DriftReport],
    ) -> Callable[[dict | None], dict]:
        params = self.params

        def step(state: dict | None) -> dict:
            applied = list((state or {}).get("applied", []))
            holder["before"] = drift.report(state, params)
            if request_id in applied:  # a replay of an update the store already has
                holder["report"] = holder["before"]
                return dict(state or {})
            new_state, holder["report"] = drift.update(state, obs, baseline, params)
            new_state["applied"] = [*applied, request_id][-APPLIED_MEMORY:]
            return new_state

        return step

    async def update(
        self,
        session_id: str,
        request_id: str,
        obs: drift.Observation,
        baseline: drift.Baseline | None,
        ts: float,
        *,
        behind_spill: bool,
    ) -> tuple[drift.DriftReport, bool, bool]:
        """Fold one turn into the session's state; (report, provisional, alarm before this turn)."""
        key = session_state_key(session_id, "drift")
        holder: dict[str, drift.DriftReport] = {}
        step = self._stepper(request_id, obs, baseline, holder)
        if not behind_spill:
            try:
                self._remember(key, await self.store.update_state(key, step, created_after=ts))
                return holder["report"], False, holder["before"].alert
            except (StoreUnavailable, SessionDeleted):
                pass
        self._remember(key, step(self._local.get(key)))
        return holder["report"], True, holder["before"].alert

    async def apply_pending(self, turn: Turn) -> Turn:
        """Replay: apply a spilled turn's drift update to the store's state; the turn with its final drift."""
        persona = self.personas(turn.persona) if turn.persona else None
        holder: dict[str, drift.DriftReport] = {}
        step = self._stepper(turn.request_id, observation_of(turn.tone), self.baseline(persona), holder)
        key = session_state_key(turn.session_id, "drift")
        self._remember(key, await self.store.update_state(key, step, created_after=turn.ts))
        return dataclasses.replace(turn, drift=holder["report"].public(), state_pending=False)

    def forget(self, session_id: str) -> None:
        self._local.pop(session_state_key(session_id, "drift"), None)

    def _remember(self, key: str, state: dict) -> None:
        self._local[key] = state
        self._local.move_to_end(key)
        while len(self._local) > LOCAL_STATE_LIMIT:
            self._local.popitem(last=False)
