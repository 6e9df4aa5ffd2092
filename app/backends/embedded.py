"""EmbeddedBackend: chat completions from the local model on the engine worker (the default backend).

request (validated against the engine's request model) -> model/adapter routing (the adapter registry) -> chat
template + tokenize (off the event loop) -> engine queue -> events -> OpenAI-shaped body or chunks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import ValidationError

from app.backends.base import ChatCall, Chunk, Completed, Served, StreamEnd, StreamEvent
from app.engine.adapters import AdapterRegistry
from app.engine.sampling import SamplingParams
from app.engine.worker import DoneEvent, Engine, ErrorEvent, GenerationRequest, RequestHandle, TokenEvent
from app.errors import ContextLengthExceeded, InvalidRequest, RequestInvalid
from app.schemas.chat import ChatCompletionRequest

SYSTEM_FINGERPRINT = "tonewatch-embedded"


class EmbeddedBackend:
    kind = "embedded"

    def __init__(
        self,
        engine: Engine,
        tokenizer: Any,
        registry: AdapterRegistry,
        *,
        base_name: str,
        max_new_tokens: int,
        max_prompt_tokens: int,
        started_at: float,
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        self.registry = registry
        self.base_name = base_name
        self.max_new_tokens = max_new_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.started_at = int(started_at)

    # ---- requests -------------------------------------------------------------------------------------------
    def parse_chat(self, raw: dict[str, Any], request_id: str) -> ChatCall:
        try:
            req = ChatCompletionRequest.model_validate(raw)
        except ValidationError as exc:
            raise RequestInvalid(exc.errors()) from None
        body = {k: v for k, v in raw.items() if k not in ("session_id", "persona")}
        return ChatCall(
            raw=body,
            parsed=req,
            served=self._served(req.model),
            stream=req.stream,
            session_id=req.session_id,
            persona=req.persona,
            request_id=request_id,
            prompt_text=req.messages[-1].text(),
        )

    def _served(self, model: str | None) -> Served:
        target = self.registry.resolve(model)
        return Served(model=target.model, adapter=target.adapter, label=target.adapter or "base")

    def sampling_params(self, req: ChatCompletionRequest) -> SamplingParams:
        limit = self.max_new_tokens
        field_name = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        max_tokens = req.max_completion_tokens or req.max_tokens or limit
        if max_tokens > limit:
            raise InvalidRequest(f"{field_name}={max_tokens} exceeds this server's limit of {limit}", param=field_name)
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            seed=req.seed,
            stop=tuple(req.stop or ()),
        )

    def _encode(self, req: ChatCompletionRequest) -> list[int]:
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
        if messages[-1]["role"] == "assistant":
            raise InvalidRequest("the last message must not be from the assistant", param="messages")
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
        if len(ids) > self.max_prompt_tokens:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.max_prompt_tokens} tokens. However, your messages "
                f"resulted in {len(ids)} tokens. Please reduce the length of the messages.",
                param="messages",
            )
        return ids

    async def _submit(self, call: ChatCall) -> tuple[Served, RequestHandle]:
        req: ChatCompletionRequest = call.parsed
        served = call.served
        params = self.sampling_params(req)
        # tokenizing a large prompt takes milliseconds: keep it off the event loop
        prompt_ids = await asyncio.to_thread(self._encode, req)
        handle = self.engine.submit(GenerationRequest(prompt_ids, params, served.adapter, call.request_id))
        return served, handle

    # ---- non-stream -----------------------------------------------------------------------------------------
    async def chat(self, call: ChatCall, partial: list[str] | None = None) -> Completed:
        served, handle = await self._submit(call)
        try:
            done = await _wait_done(handle, partial)
        finally:
            handle.cancel()  # no-op when finished; frees the row if we were cancelled (client gone)
        self.registry.count_served(served.adapter)
        body = {
            "id": call.request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": done.finish_reason,
                }
            ],
            "usage": _usage(done),
        }
        return Completed(
            body=body, served=served, text=done.text, finish_reason=done.finish_reason, latency=_latency(done)
        )

    # ---- stream ---------------------------------------------------------------------------------------------
    async def chat_stream(self, call: ChatCall) -> EmbeddedStream:
        served, handle = await self._submit(call)
        req: ChatCompletionRequest = call.parsed
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return EmbeddedStream(
            served, handle, call.request_id, include_usage, on_done=lambda: self.registry.count_served(served.adapter)
        )

    # ---- models and health ----------------------------------------------------------------------------------
    async def list_models(self) -> list[dict[str, Any]]:
        created = self.started_at
        cards = [
            {
                "id": self.base_name,
                "object": "model",
                "created": created,
                "owned_by": "tonewatch",
                "root": self.base_name,
                "parent": None,
            }
        ]
        for name in self.registry.names():
            cards.append(
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "tonewatch",
                    "root": name,
                    "parent": self.base_name,
                }
            )
        return cards

    def served_labels(self) -> set[str]:
        return {"base", *self.registry.names()}

    async def ready(self) -> str | None:
        return None if self.engine.alive else "engine worker thread is not running"

    async def close(self) -> None:
        self.registry.close()
        await asyncio.to_thread(self.engine.stop)


class EmbeddedStream:
    def __init__(
        self,
        served: Served,
        handle: RequestHandle,
        request_id: str,
        include_usage: bool,
        on_done: Callable[[], None] = lambda: None,
    ):
        self.on_done = on_done
        self.served = served
        self.handle = handle
        self.request_id = request_id
        self.include_usage = include_usage
        self.created = int(time.time())
        self._pieces: list[str] = []

    def _chunk(self, delta: dict, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.served.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        yield Chunk(self._chunk({"role": "assistant", "content": ""}))
        while True:
            event = await self.handle.events.get()
            if isinstance(event, TokenEvent):
                self._pieces.append(event.text)
                yield Chunk(self._chunk({"content": event.text}), text=event.text)
            elif isinstance(event, ErrorEvent):
                raise event.error
            else:
                self.on_done()
                trailer = [self._chunk({}, event.finish_reason)]
                if self.include_usage:
                    trailer.append({**self._chunk({}), "choices": [], "usage": _usage(event)})
                yield StreamEnd(
                    text=event.text, finish_reason=event.finish_reason, latency=_latency(event), trailer=trailer
                )
                return

    def partial_text(self) -> str:
        return "".join(self._pieces)

    def leftover(self) -> StreamEnd | None:
        while not self.handle.events.empty():
            event = self.handle.events.get_nowait()
            if isinstance(event, TokenEvent):
                self._pieces.append(event.text)
            elif isinstance(event, DoneEvent):
                return StreamEnd(text=event.text, finish_reason=event.finish_reason, latency=_latency(event))
            else:
                return None
        return None

    async def aclose(self) -> None:
        self.handle.cancel()


async def _wait_done(handle: RequestHandle, partial: list[str] | None) -> DoneEvent:
    while True:
        event = await handle.events.get()
        if isinstance(event, DoneEvent):
            return event
        if isinstance(event, ErrorEvent):
            raise event.error
        if partial is not None:
            partial.append(event.text)


def _usage(done: DoneEvent) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def _latency(done: DoneEvent) -> dict[str, float]:
    return {
        "queue_s": round(done.queue_s, 4),
        "ttft_s": round(done.ttft_s, 4),
        "total_s": round(done.total_s, 4),
        "tokens": done.completion_tokens,
    }
