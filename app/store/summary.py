"""The session index's record and query, shared by both stores (pure: no I/O).

A session's *summary* is folded from its turns as they are appended, in the same store operation as the turn (so
the spill's replay after an outage rebuilds it, and a replayed turn is folded once: `last_seq` is the high-water
mark). It is what `GET /v1/sessions` lists and filters on: the owner (the id of the client key whose request
created the session), first/last activity, the last turn's adapter, persona and tone label, the drift report after
the last scored turn, a count per tone label and the worst turn by persona distance.

Listing walks a *snapshot*: the first page of a query stores the matching session ids in their order (by last
activity or drift score, as of that moment) under a random id that the cursor carries, and later pages read it by
position. So a walk visits every session that matched when it began exactly once, however many turns arrive
meanwhile (a session that moves to the top is not seen twice; one that moves down is not skipped), and each page
shows the sessions' current summaries. Snapshots expire after SNAPSHOT_TTL_S; an expired cursor is refused.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from app.store.base import Turn

SNAPSHOT_TTL_S = 600  # a walk must fetch its next page within this
NO_DRIFT = -1e9  # the drift-order score of a session with no scored turn: listed last
Order = Literal["recent", "drift"]


class InvalidCursor(ValueError):
    """The cursor is not one this store issued for this caller, or its snapshot expired."""


@dataclass(frozen=True)
class SessionQuery:
    owner: str | None  # only the sessions this key id created; None: every session (the admin token)
    alerting: bool | None = None  # True: detector in alarm after the last scored turn; False: not in alarm
    adapter: str | None = None  # the adapter (or model) that served the last turn
    persona: str | None = None
    label: str | None = None  # the last scored turn's tone label
    since: float | None = None  # last activity at or after (unix seconds)
    until: float | None = None  # last activity at or before
    order: Order = "recent"
    limit: int = 50

    @property
    def scope(self) -> str:
        """Whose snapshots these are: a cursor only works for the caller it was issued to."""
        return self.owner or "*"

    def matches(self, summary: dict[str, Any]) -> bool:
        """The filters checked row by row: the reference the stores' indexed queries are tested against."""
        drift = summary.get("drift") or {}
        checks = [
            self.owner is None or summary.get("owner") == self.owner,
            self.alerting is None or bool(drift.get("alert")) == self.alerting,
            self.adapter is None or summary.get("adapter") == self.adapter,
            self.persona is None or summary.get("persona") == self.persona,
            self.label is None or summary.get("label") == self.label,
            self.since is None or summary["last_ts"] >= self.since,
            self.until is None or summary["last_ts"] <= self.until,
        ]
        return all(checks)


def fold(summary: dict[str, Any] | None, turn: Turn, seq: int) -> dict[str, Any] | None:
    """The summary after `turn` (stored with `seq`), or None when it already holds that turn (a replay)."""
    if summary is not None and int(summary.get("last_seq", 0)) >= seq:
        return None
    new = dict(summary) if summary else _empty(turn)
    new["turns"] = int(new["turns"]) + 1
    new["last_seq"] = seq
    new["first_ts"] = min(float(new["first_ts"]), float(turn.ts))
    new["last_ts"] = max(float(new["last_ts"]), float(turn.ts))
    new["adapter"] = turn.adapter
    if turn.persona is not None:
        new["persona"] = turn.persona
    label = (turn.tone or {}).get("label")
    if label:  # a turn without a tone (cancelled, failed, tool calls only) keeps the last label and drift
        new["label"] = label
        new["labels"] = {**new["labels"], label: int(new["labels"].get(label, 0)) + 1}
    if turn.drift is not None:
        new["drift"] = dict(turn.drift)
    distance = (turn.tone or {}).get("persona_distance")
    if distance is not None:
        worst = new.get("worst")
        if worst is None or float(distance) > float(worst["persona_distance"]):
            new["worst"] = {"seq": seq, "persona_distance": float(distance)}
    return new


def _empty(turn: Turn) -> dict[str, Any]:
    return {
        "session_id": turn.session_id,
        "owner": turn.owner,
        "first_ts": float(turn.ts),
        "last_ts": float(turn.ts),
        "last_seq": 0,
        "turns": 0,
        "adapter": turn.adapter,
        "persona": turn.persona,
        "label": None,
        "drift": None,
        "labels": {},
        "worst": None,
    }


def alerting(summary: dict[str, Any]) -> bool:
    return bool((summary.get("drift") or {}).get("alert"))


def drift_score(summary: dict[str, Any]) -> float:
    drift = summary.get("drift")
    return float(drift["score"]) if drift and drift.get("score") is not None else NO_DRIFT


def new_snapshot_id() -> str:
    return secrets.token_hex(12)


def encode_cursor(snapshot: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{snapshot}:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    """(snapshot id, offset) of a cursor this module encoded; InvalidCursor otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        version, snapshot, offset = raw.split(":")
        if version != "v1" or len(snapshot) != 24 or not all(c in "0123456789abcdef" for c in snapshot):
            raise ValueError(raw)
        position = int(offset)
        if position < 0:
            raise ValueError(raw)
        return snapshot, position
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InvalidCursor("cursor is not a next_cursor this server issued") from exc
