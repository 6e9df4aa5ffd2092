"""SQLiteStore: session history in one SQLite file (WAL), for single-node deployments without Redis.

One connection (check_same_thread=False) guarded by a threading.Lock; every call runs in a worker thread via
asyncio.to_thread. Writes run in BEGIN IMMEDIATE transactions, so update_state is atomic even across processes that
share the file. The per-session cap deletes the oldest rows; seq = max(seq) + 1 (the newest turn is never trimmed, so
seq keeps counting after trimming and restarts at 1 only after delete_session, as in Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from app.store import summary as idx
from app.store.base import (
    REFUSED,
    STATE_SEP,
    SessionDeleted,
    StoreUnavailable,
    Turn,
    VersionConflict,
    dumps,
    state_owner,
)
from app.store.summary import SessionQuery

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (session_id, seq),
    UNIQUE (session_id, request_id)
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS control (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tombstones (session_id TEXT PRIMARY KEY, deleted_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    owner TEXT,
    last_ts REAL NOT NULL,
    adapter TEXT NOT NULL,
    persona TEXT,
    label TEXT,
    alerting INTEGER NOT NULL,
    drift_score REAL NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_recent ON sessions (last_ts);
CREATE INDEX IF NOT EXISTS sessions_drift ON sessions (drift_score);
CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner, last_ts);
CREATE INDEX IF NOT EXISTS sessions_alerting ON sessions (alerting, last_ts);
CREATE INDEX IF NOT EXISTS sessions_adapter ON sessions (adapter, last_ts);
CREATE INDEX IF NOT EXISTS sessions_persona ON sessions (persona, last_ts);
CREATE INDEX IF NOT EXISTS sessions_label ON sessions (label, last_ts);
CREATE TABLE IF NOT EXISTS snapshots (snap TEXT PRIMARY KEY, scope TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot_rows (
    snap TEXT NOT NULL, pos INTEGER NOT NULL, session_id TEXT NOT NULL, PRIMARY KEY (snap, pos)
);
"""
TOMBSTONE_TTL_S = 30 * 86400


class SQLiteStore:
    def __init__(self, path: Path | str, max_turns: int = 1000, busy_timeout_s: float = 5.0):
        if max_turns < 1:
            raise ValueError("max_turns must be >= 1")
        self.path = Path(path)
        self.max_turns = int(max_turns)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; transactions are explicit (BEGIN IMMEDIATE) where needed.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    async def _run(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                if self._db is None:
                    raise StoreUnavailable("sqlite store is closed")
                try:
                    return fn(self._db)
                except BaseException as exc:
                    if self._db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            self._db.execute("ROLLBACK")
                    # locked/busy past the timeout, I/O error, corrupt file: the store is unavailable
                    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
                        raise StoreUnavailable(f"sqlite {what}: {exc}") from exc
                    raise

        return await asyncio.to_thread(call)

    @staticmethod
    def _write(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        db.execute("BEGIN IMMEDIATE")
        result = fn(db)
        db.execute("COMMIT")
        return result

    # protocol
    async def ping(self) -> None:
        await self._run("ping", lambda db: db.execute("SELECT 1").fetchone())

    async def append(self, turn: Turn) -> int:
        d = turn.to_dict()
        d.pop("seq", None)
        sid, rid = turn.session_id, turn.request_id

        def tx(db: sqlite3.Connection) -> int:
            if _deleted_since(db, sid, float(turn.ts)):
                return REFUSED
            row = db.execute("SELECT seq FROM turns WHERE session_id=? AND request_id=?", (sid, rid)).fetchone()
            if row:
                return int(row[0])
            seq = int(
                db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE session_id=?", (sid,)).fetchone()[0]
            )
            db.execute(
                "INSERT INTO turns (session_id, seq, request_id, ts, json) VALUES (?,?,?,?,?)",
                (sid, seq, rid, float(turn.ts), dumps(d)),
            )
            db.execute("DELETE FROM turns WHERE session_id=? AND seq <= ?", (sid, seq - self.max_turns))
            _index_turn(db, turn, seq)
            return seq

        return await self._run("append", lambda db: self._write(db, tx))

    async def get_turns(self, session_id: str, after: int = 0, limit: int = 100) -> list[Turn]:
        if limit <= 0:
            return []
        rows = await self._run(
            "get_turns",
            lambda db: db.execute(
                "SELECT seq, json FROM turns WHERE session_id=? AND seq>? ORDER BY seq LIMIT ?",
                (session_id, min(max(0, int(after)), 2**63 - 1), int(limit)),
            ).fetchall(),
        )
        return [Turn.from_dict({**json.loads(js), "seq": seq}) for seq, js in rows]

    async def count_turns(self, session_id: str) -> int:
        return await self._run(
            "count_turns",
            lambda db: int(db.execute("SELECT COUNT(*) FROM turns WHERE session_id=?", (session_id,)).fetchone()[0]),
        )

    async def delete_session(self, session_id: str) -> bool:
        owned = session_id + STATE_SEP

        def tx(db: sqlite3.Connection) -> bool:
            n = db.execute("DELETE FROM turns WHERE session_id=?", (session_id,)).rowcount
            n += db.execute(
                "DELETE FROM state WHERE key=? OR substr(key, 1, ?)=?", (session_id, len(owned), owned)
            ).rowcount
            n += db.execute("DELETE FROM sessions WHERE session_id=?", (session_id,)).rowcount
            now = time.time()
            db.execute(
                "INSERT INTO tombstones (session_id, deleted_at) VALUES (?, ?) ON CONFLICT(session_id) "
                "DO UPDATE SET deleted_at=excluded.deleted_at",
                (session_id, now),
            )
            db.execute("DELETE FROM tombstones WHERE deleted_at < ?", (now - TOMBSTONE_TTL_S,))
            return n > 0

        return await self._run("delete_session", lambda db: self._write(db, tx))

    # the session index: a table kept in the append's transaction (see app/store/summary.py)
    async def session_summary(self, session_id: str) -> dict | None:
        row = await self._run(
            "session_summary",
            lambda db: db.execute("SELECT json FROM sessions WHERE session_id=?", (session_id,)).fetchone(),
        )
        return json.loads(row[0]) if row else None

    async def list_sessions(self, query: SessionQuery, cursor: str | None = None) -> tuple[list[dict], str | None]:
        position = idx.decode_cursor(cursor) if cursor is not None else None
        return await self._run("list_sessions", lambda db: self._write(db, lambda d: _list(d, query, position)))

    async def count_sessions(self, active_since: float) -> tuple[int, int]:
        row = await self._run(
            "count_sessions",
            lambda db: db.execute(
                "SELECT COUNT(*), COALESCE(SUM(alerting), 0) FROM sessions WHERE last_ts >= ?", (active_since,)
            ).fetchone(),
        )
        return int(row[0]), int(row[1])

    async def update_state(
        self, key: str, fn: Callable[[dict | None], dict], *, created_after: float | None = None
    ) -> dict:
        def tx(db: sqlite3.Connection) -> dict:
            if created_after is not None and _deleted_since(db, state_owner(key), created_after):
                raise SessionDeleted(f"session {state_owner(key)!r} was deleted after this turn")
            row = db.execute("SELECT json FROM state WHERE key=?", (key,)).fetchone()
            new = fn(json.loads(row[0]) if row else None)
            db.execute(
                "INSERT INTO state (key, json) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET json=excluded.json",
                (key, dumps(new)),
            )
            return new

        return await self._run("update_state", lambda db: self._write(db, tx))

    async def get_state(self, key: str) -> dict | None:
        row = await self._run(
            "get_state", lambda db: db.execute("SELECT json FROM state WHERE key=?", (key,)).fetchone()
        )
        return json.loads(row[0]) if row else None

    async def get_control(self) -> tuple[int, dict]:
        row = await self._run(
            "get_control", lambda db: db.execute("SELECT version, doc FROM control WHERE id = 1").fetchone()
        )
        return (int(row[0]), json.loads(row[1])) if row else (0, {})

    async def cas_control(self, expected: int, doc: dict) -> int:
        body = dumps(doc)

        def tx(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT version FROM control WHERE id = 1").fetchone()
            current = int(row[0]) if row else 0
            if current != expected:
                raise VersionConflict(current)
            db.execute(
                "INSERT INTO control (id, version, doc) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "version = excluded.version, doc = excluded.doc",
                (current + 1, body),
            )
            return current + 1

        return await self._run("cas_control", lambda db: self._write(db, tx))

    def watch_control(self) -> None:
        return None  # no change feed: the control plane polls

    async def close(self) -> None:
        def shut() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(shut)

    def __repr__(self) -> str:  # pragma: no cover
        return f"SQLiteStore({str(self.path)!r}, max_turns={self.max_turns})"


def _index_turn(db: sqlite3.Connection, turn: Turn, seq: int) -> None:
    row = db.execute("SELECT json FROM sessions WHERE session_id=?", (turn.session_id,)).fetchone()
    new = idx.fold(json.loads(row[0]) if row else None, turn, seq)
    if new is None:
        return
    db.execute(
        "INSERT INTO sessions (session_id, owner, last_ts, adapter, persona, label, alerting, drift_score, json) "
        "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(session_id) DO UPDATE SET owner=excluded.owner, "
        "last_ts=excluded.last_ts, adapter=excluded.adapter, persona=excluded.persona, label=excluded.label, "
        "alerting=excluded.alerting, drift_score=excluded.drift_score, json=excluded.json",
        (
            turn.session_id,
            new["owner"],
            new["last_ts"],
            new["adapter"],
            new["persona"],
            new["label"],
            int(idx.alerting(new)),
            idx.drift_score(new),
            dumps(new),
        ),
    )


def _list(
    db: sqlite3.Connection, query: SessionQuery, position: tuple[str, int] | None
) -> tuple[list[dict], str | None]:
    """A page of the query's snapshot (built on the first page; see summary.py for why a walk reads a snapshot)."""
    now = time.time()
    if position is None:
        where, params = _where(query)
        order = "drift_score" if query.order == "drift" else "last_ts"
        select = f"SELECT session_id FROM sessions WHERE {where} ORDER BY {order} DESC, session_id DESC"
        first = db.execute(f"{select} LIMIT ?", (*params, query.limit + 1)).fetchall()
        if len(first) <= query.limit:  # one page holds it all: no snapshot to keep
            return _summaries(db, [r[0] for r in first]), None
        snapshot, offset = idx.new_snapshot_id(), 0
        db.execute(
            "DELETE FROM snapshot_rows WHERE snap IN (SELECT snap FROM snapshots WHERE created < ?)",
            (now - idx.SNAPSHOT_TTL_S,),
        )
        db.execute("DELETE FROM snapshots WHERE created < ?", (now - idx.SNAPSHOT_TTL_S,))
        db.execute("INSERT INTO snapshots (snap, scope, created) VALUES (?,?,?)", (snapshot, query.scope, now))
        db.execute(
            f"INSERT INTO snapshot_rows (snap, pos, session_id) SELECT ?, ROW_NUMBER() OVER () - 1, session_id "
            f"FROM ({select})",
            (snapshot, *params),
        )
    else:
        snapshot, offset = position
        row = db.execute("SELECT scope, created FROM snapshots WHERE snap=?", (snapshot,)).fetchone()
        if row is None or row[0] != query.scope or row[1] < now - idx.SNAPSHOT_TTL_S:
            raise idx.InvalidCursor("cursor expired or was issued for another query scope: list again")
    ids = [
        r[0]
        for r in db.execute(
            "SELECT session_id FROM snapshot_rows WHERE snap=? AND pos >= ? ORDER BY pos LIMIT ?",
            (snapshot, offset, query.limit + 1),
        ).fetchall()
    ]
    more = len(ids) > query.limit
    if not more:
        db.execute("DELETE FROM snapshot_rows WHERE snap=?", (snapshot,))
        db.execute("DELETE FROM snapshots WHERE snap=?", (snapshot,))
    rows = _summaries(db, ids[: query.limit])
    return rows, idx.encode_cursor(snapshot, offset + query.limit) if more else None


def _where(query: SessionQuery) -> tuple[str, tuple]:
    clauses: list[str] = ["1=1"]
    params: list[object] = []
    for column, value in (
        ("owner", query.owner),
        ("adapter", query.adapter),
        ("persona", query.persona),
        ("label", query.label),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.alerting is not None:
        clauses.append("alerting = ?")
        params.append(int(query.alerting))
    if query.since is not None:
        clauses.append("last_ts >= ?")
        params.append(query.since)
    if query.until is not None:
        clauses.append("last_ts <= ?")
        params.append(query.until)
    return " AND ".join(clauses), tuple(params)


def _summaries(db: sqlite3.Connection, ids: list[str]) -> list[dict]:
    """Current summaries of `ids`, in that order (a session deleted since the walk began is left out)."""
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    found = dict(db.execute(f"SELECT session_id, json FROM sessions WHERE session_id IN ({marks})", ids).fetchall())
    return [json.loads(found[i]) for i in ids if i in found]


def _deleted_since(db: sqlite3.Connection, session_id: str, ts: float) -> bool:
    row = db.execute("SELECT deleted_at FROM tombstones WHERE session_id=?", (session_id,)).fetchone()
    return row is not None and ts <= float(row[0])
