"""What goes into the engine and what comes out: a GenerationRequest in, a RequestHandle back, and on the handle's
queue TokenEvents then exactly one terminal event (DoneEvent or ErrorEvent). Events cross from the worker thread to
each request's event loop through an Outbox: one wake-up of a loop per decode step, not one per token per row."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.engine.sampling import Pick, SamplingParams


@dataclass
class TokenEvent:
    text: str
    # the tokens behind this text with their logprobs and top alternatives, raw (when asked); the backend shapes
    # them for the wire (app/backends/openai_format.logprob_entries)
    logprobs: list[Pick] | None = None


@dataclass
class DoneEvent:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    queue_s: float
    ttft_s: float
    total_s: float
    request_id: str = ""


@dataclass
class ErrorEvent:
    error: Exception


Event = TokenEvent | DoneEvent | ErrorEvent


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None = None  # None = base model
    request_id: str = ""
    matcher: Any = None  # an llguidance LLMatcher constraining this row (structured output, tool calls)
    emit_text: bool = True  # False: no TokenEvents (the service turns the whole text into tool calls)
    cut_at: tuple[str, ...] = ()  # text from the first of these on is generated but not streamed (a tool call)
    guard: Any = None  # a fresh string_guard.StringGuard for structured output (repetition inside JSON strings)


class Outbox:
    """Events the worker thread produces in one step, handed to each event loop in one call: one wake-up of the
    loop per step instead of one per token per row. Only the owning (worker) thread collects; events emitted from
    any other thread go out at once."""

    def __init__(self) -> None:
        self.owner: int | None = None
        self._items: list[tuple[RequestHandle, Event]] = []

    def collecting(self) -> bool:
        return self.owner == threading.get_ident()

    def put(self, handle: RequestHandle, event: Event) -> None:
        self._items.append((handle, event))

    def flush(self) -> None:
        if not self._items:
            return
        items, self._items = self._items, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, Event]]] = {}
        for handle, event in items:
            by_loop.setdefault(handle.loop, []).append((handle.events, event))
        for loop, batch in by_loop.items():
            _send(loop, _deliver, batch)


def _deliver(batch: list[tuple[asyncio.Queue, Event]]) -> None:
    for queue, event in batch:
        queue.put_nowait(event)


def _send(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], arg: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, arg)
    except RuntimeError:  # the loop is gone (shutdown); nobody is listening
        pass


@dataclass
class RequestHandle:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event]
    created: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    terminated: bool = False  # a DoneEvent or ErrorEvent was emitted (set on the worker thread)
    outbox: Outbox | None = None

    def cancel(self) -> None:
        self.cancelled = True

    def emit(self, event: Event) -> None:
        if self.terminated:
            return  # exactly one terminal event, nothing after it
        if isinstance(event, DoneEvent | ErrorEvent):
            self.terminated = True
        if self.outbox is not None and self.outbox.collecting():
            self.outbox.put(self, event)
        else:
            _send(self.loop, self.events.put_nowait, event)

    def fail(self, exc: Exception) -> None:
        self.emit(ErrorEvent(exc))
