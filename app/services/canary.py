"""Canary rollout of an adapter, gated by tone: a share of *new* sessions is served by the canary adapter, the rest by
the current default; each scored turn of an experiment session feeds the sequential test of app/monitor/canary.py,
and the canary is rolled back the moment it is worse (promoted automatically only if the operator asked).

Assignment is a stable hash of (canary id, session id), recorded on the session's first turn of the experiment, so a
session stays on one side; sessions that began before the canary, requests without a session and requests that
name a model are not part of it. The configuration lives in the shared control document (all replicas route alike);
the test's statistics live in one state key in the store (compare-and-set), so they survive restarts and every
replica contributes to the same decision.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from app.metrics import Metrics
from app.monitor import canary as test
from app.scoring.personas import Persona
from app.store.base import StateStore, StoreUnavailable, session_state_key

log = logging.getLogger("tonewatch.canary")
RUNNING = "running"


@dataclass
class CanaryConfig:
    id: str
    adapter: str  # the canary
    current: str | None  # what it is compared against: the default when it started (None = base weights)
    persona: str
    share: float
    alpha: float
    beta: float
    relative_risk: float
    min_turns: int
    auto_promote: bool
    started_at: float
    status: str = RUNNING  # running | rolled_back | passed | promoted | stopped
    decided_at: float | None = None
    reason: str | None = None

    @property
    def rule(self) -> test.CanaryRule:
        return test.CanaryRule(
            alpha=self.alpha, beta=self.beta, relative_risk=self.relative_risk, min_turns=self.min_turns
        )

    @property
    def stats_key(self) -> str:
        return f"canary:{self.id}"


@dataclass
class Assignment:
    arm: str  # "canary" | "current"
    adapter: str | None
    new_session: bool
    canary_id: str = field(default="")


def arm_for(canary_id: str, session_id: str, share: float) -> str:
    digest = hashlib.sha256(f"{canary_id}:{session_id}".encode()).digest()
    return "canary" if int.from_bytes(digest[:8], "big") / 2**64 < share else "current"


class CanaryService:
    def __init__(self, store: StateStore, metrics: Metrics, personas: dict[str, Persona]):
        self.store = store
        self.metrics = metrics
        self.personas = personas  # the scorer's live persona table
        self.config: CanaryConfig | None = None

    # ---- the shared configuration ---------------------------------------------------------------------------
    def apply(self, config: dict | None) -> None:
        self.config = CanaryConfig(**config) if config else None
        for status in ("running", "rolled_back", "passed", "promoted", "stopped"):
            self.metrics.canary_state.labels(status).set(1 if self.config and self.config.status == status else 0)

    @property
    def running(self) -> bool:
        return self.config is not None and self.config.status == RUNNING

    def intended_label(self) -> str | None:
        persona = self.personas.get(self.config.persona) if self.config else None
        if persona is None or not persona.exemplar_labels:
            return None
        return max(set(persona.exemplar_labels), key=persona.exemplar_labels.count)

    # ---- routing ---------------------------------------------------------------------------------------------
    async def assign(self, session_id: str | None) -> Assignment | None:
        """The arm of this session's request (None: not in the experiment)."""
        config = self.config
        if not self.running or session_id is None or config is None:
            return None
        key = session_state_key(session_id, "canary")
        created: dict[str, bool] = {}

        def record(state: dict | None) -> dict:
            if state and state.get("id") == config.id:
                created["new"] = False
                return state
            created["new"] = True
            return {"id": config.id, "arm": arm_for(config.id, session_id, config.share), "old": False}

        try:
            drift = await self.store.get_state(session_state_key(session_id, "drift"))
            existing = await self.store.get_state(key)
            if drift and drift.get("turns") and not (existing and existing.get("id") == config.id):
                return None  # began before the canary: stays where it was
            state = await self.store.update_state(key, record)
        except StoreUnavailable:
            # without the store, the hash alone still keeps a session on one side; it is not counted as new
            arm = arm_for(config.id, session_id, config.share)
            return Assignment(arm, config.adapter if arm == "canary" else config.current, False, config.id)
        arm = state["arm"]
        if created.get("new"):
            self.metrics.canary_sessions.labels(arm).inc()
        return Assignment(
            arm, config.adapter if arm == "canary" else config.current, created.get("new", False), config.id
        )

    # ---- the test --------------------------------------------------------------------------------------------
    async def observe(
        self,
        assignment: Assignment,
        session_id: str,
        tone: dict[str, Any] | None,
        drift: dict[str, Any] | None,
        latency_s: float | None,
    ) -> str | None:
        """Fold one scored turn into the shared statistics; returns the decision when this turn made it."""
        config = self.config
        if config is None or config.status != RUNNING or assignment.canary_id != config.id or tone is None:
            return None
        intended = self.intended_label()
        rule = config.rule
        before: dict[str, Any] = {}

        def step(state: dict | None) -> dict:
            prior = state or test.new_state()
            before["decision"] = prior["decision"]
            before["bad"] = dict(prior["bad"][assignment.arm])
            return test.observe(
                state,
                assignment.arm,
                new_session=assignment.new_session,
                session_id=session_id,
                alert=bool(drift and drift.get("alert")),
                mismatch=None if tone.get("persona_match") is None else not tone["persona_match"],
                off_label=None if intended is None else tone.get("label") != intended,
                latency_s=latency_s,
                rule=rule,
            )

        try:
            state = await self.store.update_state(config.stats_key, step)
        except StoreUnavailable:
            return None  # the test waits for the store; no decision is made on a partial count
        self.metrics.canary_turns.labels(assignment.arm).inc()
        for signal, value in state["llr"].items():
            self.metrics.canary_llr.labels(signal).set(value)
        for signal in test.SIGNALS:
            if state["bad"][assignment.arm][signal] > before["bad"][signal]:
                self.metrics.canary_bad.labels(assignment.arm, signal).inc()
        decision = state["decision"]
        return decision if decision != before["decision"] else None

    async def status(self) -> dict[str, Any]:
        config = self.config
        if config is None:
            return {"status": "none"}
        try:
            stats = await self.store.get_state(config.stats_key)
        except StoreUnavailable:
            stats = None
        return {**asdict(config), "test": test.summary(stats, config.rule), "intended_label": self.intended_label()}

    def new_config(self, adapter: str, current: str | None, persona: str, body: Any) -> CanaryConfig:
        started = time.time()
        digest = hashlib.sha256(f"{adapter}:{started}".encode()).hexdigest()[:12]
        return CanaryConfig(
            id=digest,
            adapter=adapter,
            current=current,
            persona=persona,
            share=body.share,
            alpha=body.alpha,
            beta=body.beta,
            relative_risk=body.relative_risk,
            min_turns=body.min_turns,
            auto_promote=body.auto_promote,
            started_at=started,
        )
