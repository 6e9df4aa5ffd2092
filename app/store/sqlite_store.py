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
            now = time.time()
            db.execute(
                "INSERT INTO tombstones (session_id, deleted_at) VALUES (?, ?) ON CONFLICT(session_id) "
                "DO UPDATE SET deleted_at=excluded.deleted_at",
                (session_id, now),
            )
            db.execute("DELETE FROM tombstones WHERE deleted_at < ?", (now - TOMBSTONE_TTL_S,))
            return n > 0

        return await self._run("delete_session", lambda db: self._write(db, tx))

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


def _deleted_since(db: sqlite3.Connection, session_id: str, ts: float) -> bool:
    row = db.execute("SELECT deleted_at FROM tombstones WHERE session_id=?", (session_id,)).fetchone()
    return row is not None and ts <= float(row[0])
