"""Session history flow: a scored turn -> drift update (atomic, in the store; see session_drift.py for outages)
-> latency spikes -> record (never lost: the resilient wrapper spills locally when the store is down) -> metrics;
and the reads: one session's turns, the session list (the store's index), the export.

Ownership: every turn carries the id of the client key whose request produced it (`owner`, never the key); a
session belongs to the key that created it. A client key reads, lists and exports only its own sessions and may not
write into another key's (NotYourSession); the admin token (reader None) sees every session.

Alarm onsets and returns to control are logged as one JSON line each (logger `tonewatch.alarms`), and the
active/drifting gauges are store-wide counts (the same on every replica, right after a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from app import telemetry
from app.errors import NotFound, NotYourSession, StoreDown
from app.metrics import Metrics
from app.monitor import drift
from app.monitor.latency import LatencySpikeDetector
from app.scoring.personas import Persona
from app.services.session_drift import SessionDrift, observation_of
from app.store.base import SessionStore, StoreUnavailable, Turn, session_state_key
from app.store.spill import ResilientHistory
from app.store.summary import InvalidCursor, SessionQuery

log = logging.getLogger("tonewatch.history")
alarms = logging.getLogger("tonewatch.alarms")
ACTIVE_WINDOW_S = 3600.0
GAUGE_REFRESH_S = 15.0  # the store-wide gauges between turns; a turn refreshes them at most once a second
EXPORT_PAGE = 200
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
    owner: str | None = None  # the client key's id (see api/auth.key_id); None: no keys configured, or the admin


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
        self._gauges_at = 0.0
        self._gauge_task: asyncio.Task | None = None

    async def start(self) -> None:
        """Set the store-wide gauges now (they would read 0 after a restart) and keep them fresh."""
        await self.refresh_gauges()
        self._gauge_task = asyncio.get_running_loop().create_task(self._gauge_loop(), name="session-gauges")

    async def stop(self) -> None:
        if self._gauge_task is not None:
            self._gauge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gauge_task

    async def _gauge_loop(self) -> None:
        while True:
            await asyncio.sleep(GAUGE_REFRESH_S)
            await self.refresh_gauges()

    async def refresh_gauges(self) -> None:
        self._gauges_at = time.monotonic()
        try:
            active, drifting = await self.store.count_sessions(time.time() - ACTIVE_WINDOW_S)
        except StoreUnavailable:
            return  # keep the last values: the store's own gauges say it is down
        self.metrics.sessions_active.set(active)
        self.metrics.sessions_drifting.set(drifting)

    async def claim(self, session_id: str | None, owner: str | None) -> None:
        """Before generating: refuse a client key writing into a session another key created (its owner would read
        this key's prompts). Unchecked while the store is unreachable: the turn is kept under the caller's id."""
        if not session_id or owner is None:
            return
        try:
            summary = await self.store.session_summary(session_id)
        except StoreUnavailable:
            return
        if summary is not None and summary.get("owner") != owner:
            raise NotYourSession(
                f"session {session_id!r} was created with another API key; use a session id of your own",
                param="session_id",
            )

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
            report, provisional, was_alert = await self.drift.update(
                turn_in.session_id,
                request_id,
                observation,
                baseline,
                ts,
                behind_spill=self.spill.pending(turn_in.session_id),
            )
            pending = provisional
            self._update_stream(turn_in.label, persona_label, observation, baseline)
            if report.alert != was_alert:
                self._alarm_event(turn_in, persona_label, report)
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
                owner=turn_in.owner,
                state_pending=pending,
            )
        )
        self.metrics.history_write_seconds.observe(time.perf_counter() - started)
        if time.monotonic() - self._gauges_at > 1.0:
            await self.refresh_gauges()
        if drift_public is None:
            return None
        block = {**drift_public, "spikes": spikes}
        if provisional:
            block["provisional"] = True  # computed on this replica's copy while the store was unreachable
        return block

    def _alarm_event(self, turn_in: TurnInput, persona: str, report: drift.DriftReport) -> None:
        """One JSON line per alarm onset and per return to control, for log pipelines and grep."""
        if report.alert:
            self.metrics.drift_alerts.labels(turn_in.label, persona).inc()
            telemetry.drift_alarm(turn_in.session_id, turn_in.source, persona, report)
        event = {
            "event": "tone_drift_alarm" if report.alert else "tone_drift_cleared",
            "session_id": turn_in.session_id,
            "adapter": turn_in.source,
            "persona": turn_in.persona.name if turn_in.persona else None,
            "detector": report.detector,
            "score": round(report.score, 4),
            "cusum": round(report.cusum, 4),
            "threshold": round(report.threshold, 4),
            "ewma_limit": round(report.ewma_limit, 4),
            "turn": report.turns,
            "request_id": turn_in.request_id or None,
        }
        (alarms.warning if report.alert else alarms.info)("%s", json.dumps(event, separators=(",", ":")))

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

    # ---- read path ------------------------------------------------------------------------------------------
    async def _check_reader(self, session_id: str, reader: str | None) -> bool:
        """A client key (reader = its id) sees only its own sessions; others look like sessions that do not exist.
        True when the check has seen the session's summary (so it exists); False for the admin (not looked up)."""
        if reader is None:
            return False
        summary = await self.store.session_summary(session_id)
        if summary is None or summary.get("owner") != reader:
            raise NotFound(f"session {session_id!r} has no recorded turns", param="session_id")
        return True

    async def session(self, session_id: str, after: int, limit: int, reader: str | None = None) -> dict[str, Any]:
        try:
            seen = await self._check_reader(session_id, reader)
            turns = await self.store.get_turns(session_id, after=after, limit=limit + 1)
            state = await self.store.get_state(session_state_key(session_id, "drift"))
        except StoreUnavailable as exc:
            raise StoreDown("session store is unavailable; turns are kept locally and replayed later") from exc
        if not turns and state is None and (after == 0 or not (seen or await self._exists(session_id))):
            # a page past the end of a session is empty; a session that is not there (or was deleted) is a 404
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

    async def _exists(self, session_id: str) -> bool:
        try:
            return await self.store.session_summary(session_id) is not None
        except StoreUnavailable as exc:
            raise StoreDown("session store is unavailable") from exc

    async def drift_state(self, session_id: str, reader: str | None = None) -> dict[str, Any]:
        try:
            await self._check_reader(session_id, reader)
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
        await self.refresh_gauges()
        return existed

    async def list_sessions(self, query: SessionQuery, cursor: str | None) -> dict[str, Any]:
        try:
            rows, next_cursor = await self.store.list_sessions(query, cursor)
        except InvalidCursor as exc:  # well-formed (the document says the form) but no such walk: gone or not yours
            raise NotFound(str(exc), param="cursor") from exc
        except StoreUnavailable as exc:
            raise StoreDown("session store is unavailable; sessions cannot be listed until it answers") from exc
        return {"object": "list", "data": [self._item(row) for row in rows], "next_cursor": next_cursor}

    def _item(self, summary: dict[str, Any]) -> dict[str, Any]:
        return {
            "session_id": summary["session_id"],
            "turns": summary["turns"],
            "first_ts": summary["first_ts"],
            "last_ts": summary["last_ts"],
            "adapter": summary["adapter"],
            "persona": summary.get("persona"),
            "owner": summary.get("owner"),
            "label": summary.get("label"),
            "drift": summary.get("drift") or drift.view(None, self.params),
            "labels": summary.get("labels") or {},
            "worst": summary.get("worst"),
        }

    async def export(self, query: SessionQuery) -> AsyncIterator[bytes]:
        """Every turn of every matching session, one TurnPublic JSON per line, page by page (constant memory).
        Validates the first page before the first byte, so a bad query is still an HTTP error."""
        page = await self.list_sessions(query, None)
        return self._export_lines(query, page)

    async def _export_lines(self, query: SessionQuery, page: dict[str, Any]) -> AsyncIterator[bytes]:
        try:
            while True:
                for item in page["data"]:
                    after = 0
                    while True:
                        turns = await self.store.get_turns(item["session_id"], after=after, limit=EXPORT_PAGE)
                        for turn in turns:
                            yield (json.dumps(_public_turn(turn), separators=(",", ":")) + "\n").encode()
                        if len(turns) < EXPORT_PAGE:
                            break
                        after = turns[-1].seq
                if page["next_cursor"] is None:
                    return
                page = await self.list_sessions(query, page["next_cursor"])
        except (StoreUnavailable, StoreDown) as exc:  # headers are gone: say so in-band, as the last line
            error = {"error": {"message": f"export stopped: session store unavailable ({exc})", "code": "store_down"}}
            yield (json.dumps(error) + "\n").encode()


def _public_turn(turn: Turn) -> dict[str, Any]:
    data = turn.to_dict()
    data.pop("state_pending", None)
    data.pop("owner", None)
    return data
