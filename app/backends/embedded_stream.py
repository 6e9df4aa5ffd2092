"""A stream from the embedded engine: its events as OpenAI chunks (built by openai_format), the end of the answer
(tool calls parsed, what the tone is judged on) and what is left when the client went away."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from app.backends import openai_format as fmt
from app.backends.base import ChatCall, Chunk, StreamEnd, StreamEvent
from app.backends.tools import Plan, json_strings, parse_tool_calls
from app.engine.events import DoneEvent, ErrorEvent, RequestHandle, TokenEvent
from app.engine.sampling import Pick


class EmbeddedStream:
    def __init__(
        self,
        call: ChatCall,
        handle: RequestHandle,
        plan: Plan | None,
        include_usage: bool,
        *,
        decode: Callable[[list[int]], str],
        on_done: Callable[[], None] = lambda: None,
    ):
        self.call = call
        self.decode = decode  # token ids -> text, for the logprob entries
        self.served = call.served
        self.handle = handle
        self.plan = plan  # None for a text completion
        self.include_usage = include_usage
        self.on_done = on_done
        self.chunks: fmt.ChatChunks | fmt.CompletionChunks = (
            fmt.CompletionChunks(call.request_id, call.served.model)
            if call.kind == "completion"
            else fmt.ChatChunks(call.request_id, call.served.model)
        )
        self._pieces: list[str] = []

    def _text_chunk(self, text: str, picks: list[Pick] | None) -> dict[str, Any]:
        logprobs = fmt.logprob_entries(picks, self.decode)
        if isinstance(self.chunks, fmt.CompletionChunks):
            return self.chunks.chunk(text, logprobs=logprobs)
        return self.chunks.chunk({"content": text}, logprobs=logprobs)

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        if isinstance(self.chunks, fmt.ChatChunks):
            yield Chunk(self.chunks.chunk({"role": "assistant", "content": ""}))
        while True:
            event = await self.handle.events.get()
            if isinstance(event, TokenEvent):
                self._pieces.append(event.text)
                yield Chunk(self._text_chunk(event.text, event.logprobs), text=event.text)
            elif isinstance(event, ErrorEvent):
                raise event.error
            else:
                self.on_done()
                for piece in self._end(event):
                    yield piece
                return

    def _end(self, done: DoneEvent) -> list[StreamEvent]:
        usage = fmt.usage(done.prompt_tokens, done.completion_tokens)
        if isinstance(self.chunks, fmt.CompletionChunks):
            trailer = [self.chunks.chunk("", done.finish_reason)]
            if self.include_usage:
                trailer.append(self.chunks.usage_chunk(usage))
            return [
                StreamEnd(text=done.text, finish_reason=done.finish_reason, latency=latency_of(done), trailer=trailer)
            ]
        assert self.plan is not None
        content, calls = parse_tool_calls(done.text) if self.plan.tool_mode else (done.text, [])
        finish = "tool_calls" if calls else done.finish_reason
        events: list[StreamEvent] = []
        if calls:
            events.append(Chunk(self.chunks.tool_call_chunk(calls)))
        elif self.plan.tool_mode == "required" and content:
            events.append(Chunk(self.chunks.chunk({"content": content}), text=content))
        trailer = [self.chunks.chunk({}, finish)]
        if self.include_usage:
            trailer.append(self.chunks.usage_chunk(usage))
        text, basis = tone_text(content, self.plan)
        events.append(
            StreamEnd(
                text=text,
                finish_reason=finish,
                latency=latency_of(done),
                trailer=trailer,
                scoreable=bool(text.strip()),
                tone_basis=basis,
            )
        )
        return events

    def partial_text(self) -> str:
        return "".join(self._pieces)

    def leftover(self) -> StreamEnd | None:
        while not self.handle.events.empty():
            event = self.handle.events.get_nowait()
            if isinstance(event, TokenEvent):
                self._pieces.append(event.text)
            elif isinstance(event, DoneEvent):
                ends = [e for e in self._end(event) if isinstance(e, StreamEnd)]
                return ends[0] if ends else None
            else:
                return None
        return None

    async def aclose(self) -> None:
        self.handle.cancel()


def tone_text(content: str | None, p: Plan) -> tuple[str, str]:
    """What the tone is judged on: the text content; for a JSON answer, its string values."""
    if not content:
        return "", "text"
    if p.structured:
        return json_strings(content), "json_string_values"
    return content, "text"


def latency_of(done: DoneEvent) -> dict[str, float]:
    return {
        "queue_s": round(done.queue_s, 4),
        "ttft_s": round(done.ttft_s, 4),
        "total_s": round(done.total_s, 4),
        "tokens": done.completion_tokens,
    }
