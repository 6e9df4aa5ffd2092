"""Admission: the bounded request queue in front of the worker, the control work queued for it, and the checks a
request passes before it becomes a row (cancelled, adapter unloaded meanwhile, waited too long).

Everything here is shared between the event loop (submit, call, the read-only counters) and the worker thread
(take, admit), guarded by one condition variable that the worker also sleeps on while there is nothing to do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

from app.engine.events import GenerationRequest, Outbox, RequestHandle
from app.engine.lanes import Row
from app.engine.sampling import RowSampler
from app.engine.text import TextAssembler
from app.errors import Cancelled, EngineUnavailable, ModelNotFound, QueueFull, QueueTimeout
from app.metrics import Metrics


class Admission:
    def __init__(
        self,
        metrics: Metrics,
        outbox: Outbox,
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        request_timeout_s: float,
    ):
        self.metrics = metrics
        self.outbox = outbox
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.request_timeout_s = request_timeout_s
        self.running = False
        self.cv = threading.Condition()
        self._pending: deque[RequestHandle] = deque()
        self.admitting: list[RequestHandle] = []  # taken from the queue, not yet rows (the worker's, read anywhere)
        self._control: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._finished_at: deque[float] = deque(maxlen=64)  # completion times, for Retry-After

    # ---- the event loop's side ----------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._pending)

    def submit(self, request: GenerationRequest) -> RequestHandle:
        handle = RequestHandle(request, asyncio.get_running_loop(), asyncio.Queue(), outbox=self.outbox)
        with self.cv:
            if not self.running:
                raise EngineUnavailable("engine is not running")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(
                    f"server queue is full ({self.max_queue} waiting); retry after the Retry-After delay",
                    retry_after_s=self.retry_after_s(),
                )
            self._pending.append(handle)
            self.metrics.queue_depth.set(len(self._pending))
            self.cv.notify_all()
        return handle

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self.cv:
            if not self.running:
                future.set_exception(EngineUnavailable("engine is not running"))
                return future
            self._control.append((fn, future))
            self.cv.notify_all()
        return future

    def retry_after_s(self) -> float:
        """How long the queue ahead of a new request takes to drain, from the recent completion rate."""
        now = time.monotonic()
        done = [t for t in list(self._finished_at) if now - t < 120]
        if len(done) >= 2 and now > done[0]:
            rate = len(done) / (now - done[0])
            return min(120.0, max(1.0, len(self._pending) / rate))
        return max(1.0, self.max_wait_s + 1.0)

    def waiting_for(self, adapter: str) -> int:
        """Queued and being-admitted requests for an adapter (a snapshot, from any thread)."""
        pending = sum(1 for h in list(self._pending) if h.request.adapter == adapter)
        return pending + sum(1 for h in list(self.admitting) if h.request.adapter == adapter)

    def stop(self) -> None:
        """Stop accepting and wake the worker (it fails what is in flight and exits)."""
        with self.cv:
            self.running = False
            self.cv.notify_all()

    def drain(self) -> list[RequestHandle]:
        """The requests still queued, removed (failed by the caller once the worker has stopped)."""
        with self.cv:
            pending, self._pending = list(self._pending), deque()
        return pending

    # ---- the worker's side --------------------------------------------------------------------------------------
    def wait_for_work(self, busy: Callable[[], bool]) -> bool:
        """Sleep until there is something to do; False once stopped."""
        with self.cv:
            while self.running and not self._pending and not self._control and not busy():
                self.cv.wait(timeout=0.5)
            return self.running

    def run_control(self, before_each: Callable[[], None]) -> None:
        """Run the queued control work (adapter installs, ...) on this thread, between steps."""
        while self._control:
            fn, future = self._control.popleft()
            before_each()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

    def take(self, room: int, idle: bool) -> list[RequestHandle]:
        """Pop what fits into the batch; when the worker is idle, first wait up to max_wait for the batch to fill."""
        if room <= 0:
            return []
        if idle and self._pending and self.max_wait_s > 0:
            deadline = self._pending[0].created + self.max_wait_s
            with self.cv:
                while self.running and len(self._pending) < room and time.monotonic() < deadline:
                    self.cv.wait(timeout=max(0.0, deadline - time.monotonic()))
        taken: list[RequestHandle] = []
        with self.cv:
            while self._pending and len(taken) < room:
                taken.append(self._pending.popleft())
            self.metrics.queue_depth.set(len(self._pending))
            self.admitting = taken
        return taken

    def row_for(
        self, handle: RequestHandle, now: float, adapters_present: Collection[str], tokenizer: Any
    ) -> Row | None:
        """The request as a row, or None when it was answered here (cancelled, adapter gone, waited too long)."""
        waited = now - handle.created
        if handle.cancelled:
            handle.fail(Cancelled("client went away before admission"))
            return None
        adapter = handle.request.adapter
        if adapter is not None and adapter not in adapters_present:
            # unloaded between routing and admission: refuse this row, never break the batch
            handle.fail(ModelNotFound(f"model {adapter!r} was unloaded", param="model"))
            return None
        if waited > self.request_timeout_s:
            handle.fail(QueueTimeout(f"request waited {waited:.1f}s in the queue; server overloaded"))
            return None
        self.metrics.queue_wait.observe(waited)
        request = handle.request
        assembler = TextAssembler(tokenizer, request.params.stop, cut_at=request.cut_at)
        return Row(handle, assembler, RowSampler.create(request.params, request.matcher, request.guard), now)

    def finished(self, now: float) -> None:
        self._finished_at.append(now)

    def fail_admitting(self, error: Exception) -> None:
        for handle in self.admitting:
            handle.fail(error)
        self.admitting = []
