"""open_store: the configured store (its own module, so the backends can import the contracts without a cycle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.store.base import SessionStore
from app.store.redis_store import RedisStore
from app.store.sqlite_store import SQLiteStore


def open_store(redis_url: str | None, db_path: Path, **kw: Any) -> SessionStore:
    """RedisStore when `redis_url` is set, else SQLiteStore at `db_path`. Keyword arguments a backend does not take
    (e.g. `ttl_s` for SQLite) are ignored for that backend."""
    if redis_url:
        allowed = {"prefix", "max_turns", "ttl_s", "socket_timeout", "max_connections"}
        return RedisStore(redis_url, **{k: v for k, v in kw.items() if k in allowed})
    allowed = {"max_turns", "busy_timeout_s"}
    return SQLiteStore(Path(db_path), **{k: v for k, v in kw.items() if k in allowed})
