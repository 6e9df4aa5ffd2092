"""ResilientHistory: nothing lost when the store blinks or hangs.

`record(turn)` writes through to the (guarded) TurnStore. When the store is unavailable (StoreUnavailable, a
timeout, or the circuit breaker open), the turn goes to a bounded local spill: an in-memory deque mirrored to an
append-only JSONL file. A background task waits for the store to come back and replays the spill oldest first.

Order and drift state: a turn whose drift update could not reach the store is spilled with `state_pending`; the
replay first applies its drift update to the store's state (via `apply_state`, in order, idempotent per request
id), then appends it, so the state after recovery equals a run without the outage. While a session has turns in
the spill, its new turns are spilled behind them (per-session order); other sessions write through.

Deletion: `delete_session` drops the session's spilled turns under the replay lock, and the store keeps a
tombstone, so turns produced before the deletion (here or on another replica) are never replayed into it.

The file holds every spilled turn not yet replayed: it is truncated when the spill drains, compacted when it grows
past twice the bound, and reloaded (then replayed) by the next instance after a crash. Its writes run on a thread of
their own (app/store/spill_file.py): nothing here waits on the disk. One instance per spill file: with several
worker processes give each its own path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.backoff import ExponentialWithJitterBackoff

from app.store.base import REFUSED, SessionDeleted, StoreUnavailable, Turn, TurnStore
from app.store.spill_file import SpillFile

log = logging.getLogger("tonewatch.store.spill")

_UNAVAILABLE = (StoreUnavailable, TimeoutError, asyncio.TimeoutError)
StateApplier = Callable[[Turn], Awaitable[Turn]]


class ResilientHistory:
    def __init__(
        self,
        store: TurnStore,
        spill_path: Path | str | None,
        *,
        max_spill: int = 10_000,
        metrics: Any = None,
        write_timeout_s: float = 2.0,
        retry_min_s: float = 0.05,
        retry_max_s: float = 5.0,
        apply_state: StateApplier | None = None,
        store_reachable: asyncio.Event | None = None,
        spill_file: SpillFile | None = None,
    ):
        if max_spill < 1:
            raise ValueError("max_spill must be >= 1")
        self.store = store
        self.spill_path = Path(spill_path) if spill_path is not None else None
        self.max_spill = int(max_spill)
        self.metrics = metrics
        self.write_timeout_s = write_timeout_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        # redis-py's exponential backoff with jitter between failed replays (the same policy as its clients')
        self._backoff = ExponentialWithJitterBackoff(cap=retry_max_s, base=retry_min_s)
        # applies a spilled turn's pending drift update in the store, returning the turn with its final drift
        self.apply_state = apply_state
        # set while the store is believed reachable (the circuit breaker's event); replay waits for it
        self.store_reachable = store_reachable
        self._queue: deque[Turn] = deque()
        self._by_session: Counter[str] = Counter()
        self._lock = asyncio.Lock()  # the replay of one turn and a session deletion never interleave
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        # the crash-recovery copy on disk, written off the event loop; None: memory only
        self._spill_file = spill_file or (SpillFile(self.spill_path) if self.spill_path is not None else None)
        self._file_lines = 0
        self._loaded = False
        self._degraded = False
        self._dropped = 0
        self._replayed = 0
        self._discarded = 0

    # public state
    @property
    def spilled(self) -> int:
        """Turns waiting in the spill."""
        return len(self._queue)

    @property
    def degraded(self) -> bool:
        """True when the last store operation failed."""
        return self._degraded

    @property
    def dropped(self) -> int:
        """Turns lost because the spill was full (since this instance started)."""
        return self._dropped

    @property
    def replayed(self) -> int:
        """Spilled turns written to the store by the replay task."""
        return self._replayed

    @property
    def discarded(self) -> int:
        """Spilled turns not replayed because their session was deleted meanwhile."""
        return self._discarded

    def pending(self, session_id: str) -> bool:
        """The session has turns in the spill: its new turns must queue behind them."""
        self._ensure_loaded()
        return self._by_session.get(session_id, 0) > 0

    def pending_count(self, session_id: str) -> int:
        return self._by_session.get(session_id, 0)

    # lifecycle
    async def start(self) -> None:
        """Reload a spill file left by an earlier process (read off the loop) and start the replay task."""
        if not self._loaded:
            loaded = await asyncio.to_thread(self._spill_file.read) if self._spill_file is not None else []
            if not self._loaded:
                self._take_loaded(loaded)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._replay_loop(), name="history-spill-replay")
        if self._queue:
            self._wake.set()

    async def stop(self, drain_timeout_s: float = 0.0) -> None:
        """Stop the replay task (after trying to drain for up to drain_timeout_s). Unreplayed turns stay in the
        spill file for the next start."""
        if drain_timeout_s > 0 and self._queue and self._task is not None:
            await self.flush(drain_timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._spill_file is not None:
            await asyncio.to_thread(self._spill_file.close)

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the spill is empty (the replay task must be running); True if it drained in time."""
        deadline = time.monotonic() + timeout_s
        while self._queue:
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            await asyncio.sleep(0.02)
        return True

    async def file_written(self, timeout_s: float = 5.0) -> bool:
        """Wait (off the loop) until the spill file holds every turn spilled so far; True unless timed out."""
        if self._spill_file is None:
            return True
        return await asyncio.to_thread(self._spill_file.wait_written, timeout_s)

    # the write path
    async def record(self, turn: Turn) -> None:
        """Persist `turn`, or spill it locally. Never raises (cancellation excepted)."""
        try:
            self._ensure_loaded()
            if turn.state_pending or self.pending(turn.session_id) or self._store_down():
                self._spill(turn)
                return
            t0 = time.perf_counter()
            try:
                seq = await asyncio.wait_for(self.store.append(turn), self.write_timeout_s)
            except asyncio.CancelledError:
                self._spill(turn)  # the caller went away mid-write: keep the turn (replay is idempotent)
                raise
            except _UNAVAILABLE as exc:
                self._set_degraded(True, exc)
                self._spill(turn)
                return
            except Exception:
                log.exception(
                    "history write of %s/%s failed unexpectedly; spilling it", turn.session_id, turn.request_id
                )
                self._set_degraded(True, None)
                self._spill(turn)
                return
            if seq == REFUSED:
                self._count_discarded(1)
            self._observe(time.perf_counter() - t0)
            self._set_degraded(False)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "history record failed for %s/%s", getattr(turn, "session_id", "?"), getattr(turn, "request_id", "?")
            )

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session in the store (raises StoreUnavailable when it cannot) and drop its spilled turns."""
        async with self._lock:
            existed = await self.store.delete_session(session_id)
            removed = [t for t in self._queue if t.session_id == session_id]
            if removed:
                self._queue = deque(t for t in self._queue if t.session_id != session_id)
                self._by_session.pop(session_id, None)
                self._count_discarded(len(removed))
                self._rewrite_file()
                self._gauge()
            return existed or bool(removed)

    # internals
    def _metric(self, name: str) -> Any:
        return getattr(self.metrics, name, None) if self.metrics is not None else None

    def _observe(self, seconds: float) -> None:
        if (m := self._metric("history_write_seconds")) is not None:
            m.observe(seconds)

    def _set_degraded(self, value: bool, exc: BaseException | None = None) -> None:
        if value and not self._degraded:
            log.warning("history store unavailable (%s); spilling turns locally", exc or "error")
        elif not value and self._degraded:
            log.info("history store answering again")
        self._degraded = value

    def _gauge(self) -> None:
        if (m := self._metric("history_spilled")) is not None:
            m.set(len(self._queue))

    def _store_down(self) -> bool:
        return self.store_reachable is not None and not self.store_reachable.is_set()

    def _count_discarded(self, n: int) -> None:
        self._discarded += n
        if (m := self._metric("history_discarded")) is not None:
            m.inc(n)

    def _popleft(self) -> Turn:
        turn = self._queue.popleft()
        self._by_session[turn.session_id] -= 1
        if self._by_session[turn.session_id] <= 0:
            del self._by_session[turn.session_id]
        return turn

    def _spill(self, turn: Turn) -> None:
        self._queue.append(turn)
        self._by_session[turn.session_id] += 1
        if (m := self._metric("history_write_errors")) is not None:
            m.inc()
        self._append_line(turn)
        self._enforce_bound()
        self._gauge()
        self._wake.set()

    def _enforce_bound(self) -> None:
        over = len(self._queue) - self.max_spill
        if over <= 0:
            return
        for _ in range(over):
            self._popleft()
        self._count_dropped(over)
        if self._file_lines > 2 * self.max_spill:
            self._rewrite_file()

    def _count_dropped(self, n: int) -> None:
        before = self._dropped
        self._dropped += n
        if (m := self._metric("history_dropped")) is not None:
            m.inc(n)
        if before == 0 or before // 1000 != self._dropped // 1000:
            log.warning(
                "history spill full (%d turns): dropped the oldest; %d dropped so far", self.max_spill, self._dropped
            )

    # spill file
    def _ensure_loaded(self) -> None:
        """Load the file now if start() has not (reads the disk: only for an instance used before start())."""
        if not self._loaded:
            self._take_loaded(self._spill_file.read() if self._spill_file is not None else [])

    def _take_loaded(self, loaded: list[Turn]) -> None:
        self._loaded = True
        if loaded:
            log.warning("reloaded %d spilled turns from %s; replaying them", len(loaded), self.spill_path)
        # Loaded turns are older than anything recorded by this instance: put them first.
        self._queue.extendleft(reversed(loaded))
        for turn in loaded:
            self._by_session[turn.session_id] += 1
        over = len(self._queue) - self.max_spill
        if over > 0:
            for _ in range(over):
                self._popleft()
            self._count_dropped(over)
        self._rewrite_file()
        self._gauge()

    def _append_line(self, turn: Turn) -> None:
        if self._spill_file is None:
            return
        if self._spill_file.stale:  # the disk fell behind and skipped lines: write the whole spill again
            self._rewrite_file()
            return
        self._spill_file.append(turn)
        self._file_lines += 1

    def _rewrite_file(self) -> None:
        """Make the file hold exactly the queue (empty when drained); the snapshot is taken now."""
        if self._spill_file is None:
            return
        self._spill_file.rewrite(self._queue)
        self._file_lines = len(self._queue)

    # replay
    async def _replay_loop(self) -> None:
        failures = 0
        while True:
            try:
                failures = await self._replay_step(failures)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the task die: the spill would stop draining
                log.exception("history replay step failed")
                await asyncio.sleep(self.retry_max_s)

    async def _replay_step(self, failures: int) -> int:
        """Replay the oldest spilled turn (or wait for one); return the consecutive failed attempts so far (the
        backoff's exponent: 0 after a success)."""
        if not self._queue:
            self._wake.clear()
            await self._wake.wait()
            # a turn was just spilled because the store failed: give it a moment before retrying
            await asyncio.sleep(self.retry_min_s)
            return failures
        if self.store_reachable is not None and not self.store_reachable.is_set():
            await self.store_reachable.wait()  # the breaker's probe says when the store answers again
        async with self._lock:
            if not self._queue:
                return failures
            head = self._queue[0]
            t0 = time.perf_counter()
            try:
                turn = head
                if head.state_pending and self.apply_state is not None:
                    turn = await self.apply_state(head)
                seq = await asyncio.wait_for(self.store.append(turn), self.write_timeout_s)
            except SessionDeleted:
                seq = REFUSED
            except _UNAVAILABLE as exc:
                self._set_degraded(True, exc)
                retry = True
            except Exception:
                # Not an outage but this turn (e.g. a value the store rejects): drop it rather than block the rest.
                log.exception("dropping spilled turn %s/%s that the store rejects", head.session_id, head.request_id)
                if self._queue and self._queue[0] is head:
                    self._popleft()
                    self._count_dropped(1)
                self._after_pop()
                return failures
            else:
                retry = False
            if not retry:
                self._observe(time.perf_counter() - t0)
                self._set_degraded(False)
                if self._queue and self._queue[0] is head:  # it may have been dropped by the bound meanwhile
                    self._popleft()
                    if seq == REFUSED:
                        self._count_discarded(1)
                    else:
                        self._replayed += 1
                self._after_pop()
                return 0
        await asyncio.sleep(self._backoff.compute(failures + 1))
        return failures + 1

    def _after_pop(self) -> None:
        if not self._queue:
            self._rewrite_file()  # all replayed: empty the file
            log.info("history spill drained (%d turns replayed so far)", self._replayed)
        self._gauge()
