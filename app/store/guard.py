"""GuardedStore: a circuit breaker in front of a SessionStore, so a dead or hung store costs requests nothing.

A refused connection fails fast by itself; a hung one (SIGSTOP, a network black hole) would make every call wait for
its socket timeout. Here every call waits at most `timeout_s`; the first failure or timeout *opens* the breaker, and
while it is open calls fail at once with StoreUnavailable (callers spill turns locally and keep serving). A
background probe pings the store every `probe_interval_s` and closes the breaker when it answers again.

Same protocol as the store it wraps, so callers do not know it is there. `reachable` (set while the breaker is
closed) is an asyncio.Event the spill's replay waits on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from app.store.base import SessionStore, StoreUnavailable, Turn
from app.store.summary import SessionQuery

log = logging.getLogger("tonewatch.store.guard")
T = TypeVar("T")


class GuardedStore:
    def __init__(
        self, store: SessionStore, *, timeout_s: float = 0.25, probe_interval_s: float = 0.5, metrics: Any = None
    ):
        self.inner = store
        self.timeout_s = timeout_s
        self.probe_interval_s = probe_interval_s
        self.metrics = metrics
        self.reachable = asyncio.Event()
        self.reachable.set()
        self.opened_at: float | None = None
        self.last_error: str | None = None
        self._probe: asyncio.Task | None = None

    @property
    def is_open(self) -> bool:
        return not self.reachable.is_set()

    async def _call(self, what: str, make: Callable[[], Awaitable[T]], timeout_s: float | None = None) -> T:
        if self.is_open:
            raise StoreUnavailable(f"store {what} skipped: circuit open since {self.last_error}")
        try:
            return await asyncio.wait_for(make(), timeout_s or self.timeout_s)
        except (StoreUnavailable, TimeoutError) as exc:
            self._trip(what, exc)
            raise StoreUnavailable(f"store {what}: {type(exc).__name__}: {exc}") from exc

    def _trip(self, what: str, exc: BaseException) -> None:
        if self.is_open:
            return
        self.reachable.clear()
        self.opened_at = time.monotonic()
        self.last_error = f"{what}: {type(exc).__name__}"
        log.warning("session store unavailable (%s: %r); serving from the local spill until it answers", what, exc)
        if self.metrics is not None:
            self.metrics.store_circuit_open.set(1)
            self.metrics.store_circuit_trips.inc()
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_loop(), name="store-probe")

    async def _probe_loop(self) -> None:
        while self.is_open:
            await asyncio.sleep(self.probe_interval_s)
            try:
                await asyncio.wait_for(self.inner.ping(), self.timeout_s * 4)
            except Exception:
                continue
            self.reachable.set()
            down = time.monotonic() - (self.opened_at or time.monotonic())
            log.info("session store answering again after %.1fs", down)
            if self.metrics is not None:
                self.metrics.store_circuit_open.set(0)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probe
        await self.inner.close()

    # ---- the SessionStore protocol ------------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._call("ping", self.inner.ping)

    async def append(self, turn: Turn) -> int:
        return await self._call("append", lambda: self.inner.append(turn))

    async def get_turns(self, session_id: str, after: int = 0, limit: int = 100) -> list[Turn]:
        return await self._call("get_turns", lambda: self.inner.get_turns(session_id, after, limit), self.timeout_s * 4)

    async def count_turns(self, session_id: str) -> int:
        return await self._call("count_turns", lambda: self.inner.count_turns(session_id))

    async def delete_session(self, session_id: str) -> bool:
        return await self._call("delete_session", lambda: self.inner.delete_session(session_id), self.timeout_s * 4)

    async def session_summary(self, session_id: str) -> dict | None:
        return await self._call("session_summary", lambda: self.inner.session_summary(session_id))

    async def list_sessions(self, query: SessionQuery, cursor: str | None = None) -> tuple[list[dict], str | None]:
        # a first page builds a snapshot of every match (bench/sessions_index.py): more time than a point read
        return await self._call("list_sessions", lambda: self.inner.list_sessions(query, cursor), self.timeout_s * 8)

    async def count_sessions(self, active_since: float) -> tuple[int, int]:
        return await self._call("count_sessions", lambda: self.inner.count_sessions(active_since))

    async def update_state(
        self, key: str, fn: Callable[[dict | None], dict], *, created_after: float | None = None
    ) -> dict:
        # SessionDeleted is an answer, not an outage: it passes through without tripping the breaker
        return await self._call("update_state", lambda: self.inner.update_state(key, fn, created_after=created_after))

    async def get_state(self, key: str) -> dict | None:
        return await self._call("get_state", lambda: self.inner.get_state(key))

    async def get_control(self) -> tuple[int, dict]:
        return await self._call("get_control", self.inner.get_control, self.timeout_s * 4)

    async def cas_control(self, expected: int, doc: dict) -> int:
        # VersionConflict is an answer, not an outage: it passes through without tripping the breaker
        return await self._call("cas_control", lambda: self.inner.cas_control(expected, doc), self.timeout_s * 4)

    def watch_control(self) -> AsyncIterator[int] | None:
        """The inner store's change feed (Redis pub/sub), or None (SQLite: the control plane polls)."""
        return self.inner.watch_control()
