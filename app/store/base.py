"""Session-history storage: the Turn record and the store contracts, one protocol per concern (TurnStore,
StateStore, ControlStore, SessionIndex; SessionStore is all four, what both backends implement). The factory is
app/store/factory.py.

State keys and sessions: `update_state(key, ...)` takes any key, but a state key is *owned* by a session when it
equals the session id or starts with ``session_id + "/"`` (``/`` is outside the session-id charset, so ownership is
unambiguous); `delete_session` deletes owned state with the turns. Use `session_state_key` to build such keys.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from app.store.summary import SessionQuery

STATE_SEP = "/"


@dataclass
class Turn:
    session_id: str
    request_id: str
    ts: float  # unix seconds
    adapter: str  # "base", an adapter name, or "external"
    persona: str | None
    prompt: str | None  # may be truncated/redacted by the caller
    response: str
    tone: dict = field(default_factory=dict)  # label, probs, formality, politeness, warmth, persona_distance, ...
    latency: dict = field(default_factory=dict)  # {"queue_s","ttft_s","total_s","tokens"}; may be empty
    drift: dict | None = None  # drift state after the turn {"score","alert","detector",...}
    spikes: list[str] = field(default_factory=list)  # e.g. ["total", "per_token"]
    seq: int = 0  # 1-based position within the session, assigned by the store on append
    finish_reason: str | None = None  # "stop" | "length" | "tool_calls" | "error" (None: posted to /v1/score)
    delivered: bool | None = None  # the full response reached the client (None: not a generated response)
    kind: str = "chat"  # "chat" | "completion" | "response" | "score"
    owner: str | None = None  # id of the client key whose request produced it (never the key); None: no keys / admin
    # Internal to the spill: the drift update of this turn was not applied to the store yet (replayed in order).
    state_pending: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Turn:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_json(self) -> str:
        return dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str | bytes) -> Turn:
        return cls.from_dict(json.loads(s))


def dumps(obj: Any) -> str:
    """Compact JSON with non-ASCII kept as is (both backends store UTF-8). Text with lone surrogates (not encodable as
    UTF-8, e.g. from a broken client) falls back to \\u escapes so it still round-trips."""
    s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    return s


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer in time; the cause is chained (`raise ... from exc`)."""


class SessionDeleted(Exception):
    """The session was deleted after this turn was produced (a tombstone newer than the turn): drop the write."""


REFUSED = 0  # what `append` returns for a turn older than the session's deletion


class VersionConflict(Exception):
    """The control document changed since it was read (another admin write won); re-read and retry."""

    def __init__(self, current: int):
        super().__init__(f"control document is at version {current}")
        self.current = current


def session_state_key(session_id: str, name: str | None = None) -> str:
    """The state key owned by `session_id` (deleted with the session): the id itself, or ``"<id>/<name>"``."""
    return session_id if not name else f"{session_id}{STATE_SEP}{name}"


def state_owner(key: str) -> str:
    """The session id a state key belongs to (see module docstring)."""
    return key.split(STATE_SEP, 1)[0]


class _Lifecycle(Protocol):
    async def ping(self) -> None:
        """Raise StoreUnavailable if the store does not answer."""

    async def close(self) -> None: ...


@runtime_checkable
class TurnStore(_Lifecycle, Protocol):
    """Per-session history: the turns, in order, exactly once."""

    async def append(self, turn: Turn) -> int:
        """Store `turn` (its `seq` is ignored) and return the seq assigned to it (1-based, per session).
        Idempotent on (session_id, request_id): a replay returns the original seq and stores nothing.
        Returns REFUSED (0) and stores nothing when the session was deleted at or after `turn.ts` (tombstone)."""

    async def get_turns(self, session_id: str, after: int = 0, limit: int = 100) -> list[Turn]:
        """Up to `limit` turns with seq > `after`, oldest first."""

    async def count_turns(self, session_id: str) -> int:
        """Turns currently held for the session (at most max_turns)."""

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session's turns, counters and owned state, and leave a tombstone (deletion time) so that
        turns produced before the deletion and replayed later are refused; True if the session had turns."""


@runtime_checkable
class StateStore(_Lifecycle, Protocol):
    """Small JSON documents updated atomically: the drift detectors' state, the canary's statistics."""

    async def update_state(
        self, key: str, fn: Callable[[dict | None], dict], *, created_after: float | None = None
    ) -> dict:
        """Atomically replace the state under `key` with fn(current) and return it. `fn` must be pure: it may run
        more than once under contention. With `created_after` (a turn's ts), raise SessionDeleted instead when the
        owning session was deleted at or after that time."""

    async def get_state(self, key: str) -> dict | None: ...


@runtime_checkable
class ControlStore(_Lifecycle, Protocol):
    """The shared control document (personas, adapter manifest, default adapter), versioned for compare-and-set."""

    async def get_control(self) -> tuple[int, dict]:
        """(version, document) of the shared control plane: personas, adapter manifest, default; (0, {}) if none."""

    async def cas_control(self, expected: int, doc: dict) -> int:
        """Replace the document if it is still at `expected`; return the new version, else raise VersionConflict."""

    def watch_control(self) -> AsyncIterator[int] | None:
        """The control document's versions as they are published (ends when the connection breaks), or None for a
        store without a change feed (SQLite); the control plane polls either way."""


@runtime_checkable
class SessionIndex(_Lifecycle, Protocol):
    """Sessions by owner, activity, drift, adapter, persona and label (app/store/summary.py: the record, the query,
    the snapshot cursor). Kept by `append` and `delete_session` in the same store, so it needs no writes of its own."""

    async def session_summary(self, session_id: str) -> dict | None:
        """The session's summary (see summary.fold), or None for a session with no recorded turn."""

    async def list_sessions(self, query: SessionQuery, cursor: str | None = None) -> tuple[list[dict], str | None]:
        """One page of matching summaries in the query's order and the cursor of the next (None on the last page).
        Raises summary.InvalidCursor for a cursor this store did not issue to this scope, or whose walk expired."""

    async def count_sessions(self, active_since: float) -> tuple[int, int]:
        """(sessions with activity since `active_since`, those of them in drift alarm), for the gauges."""


@runtime_checkable
class SessionStore(TurnStore, StateStore, ControlStore, SessionIndex, Protocol):
    """All four concerns: what the Redis and SQLite stores (and the circuit breaker in front of them) implement.
    Collaborators should ask for the narrowest protocol they use."""
