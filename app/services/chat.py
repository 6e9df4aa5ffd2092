"""Chat completion flow: validate against the model's limits -> tokenize -> engine -> (score, record) -> response.

No FastAPI here: routers translate HTTP; this module holds the logic and raises typed errors.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from app.config import Settings
from app.engine.adapters import Target
from app.engine.sampling import SamplingParams
from app.engine.worker import DoneEvent, Engine, ErrorEvent, GenerationRequest, RequestHandle, TokenEvent
from app.errors import InvalidRequest, ModelNotFound, PromptTooLong
from app.schemas.chat import (
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ModelCard,
    ModelList,
    ResponseMessage,
    Usage,
)

# Called in order after generation with (request, served model name, adapter, final event, extension fields so
# far); returns more extension fields (tone, then drift). No finishers means plain OpenAI responses.
Finisher = Callable[[ChatCompletionRequest, str, str | None, DoneEvent, dict[str, Any]], Awaitable[dict[str, Any]]]


class ChatService:
    def __init__(self, settings: Settings, engine: Engine, tokenizer: Any, base_name: str):
        self.settings = settings
        self.engine = engine
        self.tokenizer = tokenizer
        self.base_name = base_name
        self.finishers: list[Finisher] = []
        # adapter resolution is replaced by the adapter registry when it exists
        self.resolve_target: Callable[[str | None], Target] = self._base_only
        self.list_adapters: Callable[[], list[str]] = list

    def _base_only(self, model: str | None) -> Target:
        if model in (None, "", "default", self.base_name):
            return Target(self.base_name, None)
        raise ModelNotFound(f"model {model!r} does not exist; GET /v1/models lists what is served", param="model")

    def sampling_params(self, req: ChatCompletionRequest) -> SamplingParams:
        limit = self.settings.max_new_tokens
        max_tokens = req.max_completion_tokens or req.max_tokens or limit
        if max_tokens > limit:
            raise InvalidRequest(f"max_tokens={max_tokens} exceeds this server's limit of {limit}", param="max_tokens")
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            seed=req.seed,
            stop=tuple(req.stop or ()),
        )

    def _encode(self, req: ChatCompletionRequest) -> list[int]:
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]
        if any(not m["content"].strip() for m in messages if m["role"] == "user"):
            raise InvalidRequest("user messages must not be empty", param="messages")
        if messages[-1]["role"] == "assistant":
            raise InvalidRequest("the last message must not be from the assistant", param="messages")
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
        if len(ids) > self.settings.max_prompt_tokens:
            raise PromptTooLong(
                f"prompt is {len(ids)} tokens; this server accepts at most {self.settings.max_prompt_tokens}",
                param="messages",
            )
        return ids

    def model_list(self, created: int) -> ModelList:
        cards = [ModelCard(id=self.base_name, created=created, root=self.base_name)]
        for name in self.list_adapters():
            cards.append(ModelCard(id=name, created=created, root=name, parent=self.base_name))
        return ModelList(data=cards)

    async def start(self, req: ChatCompletionRequest, target: Target) -> tuple[Target, RequestHandle]:
        params = self.sampling_params(req)
        # tokenizing a large prompt takes milliseconds: keep it off the event loop
        prompt_ids = await asyncio.to_thread(self._encode, req)
        handle = self.engine.submit(GenerationRequest(prompt_ids, params, target.adapter, _new_id()))
        return target, handle

    async def _extensions(self, req: ChatCompletionRequest, target: Target, done: DoneEvent) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for finisher in self.finishers:
            extra.update(await finisher(req, target.model, target.adapter, done, extra))
        return extra

    async def complete(self, req: ChatCompletionRequest, target: Target) -> ChatCompletion:
        target, handle = await self.start(req, target)
        try:
            done = await _wait_done(handle)
        finally:
            handle.cancel()  # no-op when finished; frees the row if we were cancelled (client gone)
        extra = await self._extensions(req, target, done)
        return ChatCompletion(
            id=handle.request.request_id,
            created=int(time.time()),
            model=target.model,
            choices=[Choice(message=ResponseMessage(content=done.text), finish_reason=done.finish_reason)],
            usage=_usage(done),
            **extra,
        )

    async def stream(self, req: ChatCompletionRequest, target: Target, handle: RequestHandle) -> AsyncIterator[dict]:
        """OpenAI chunk dicts; the caller frames them as SSE. Cancels the row if the consumer stops early."""
        created = int(time.time())

        def chunk(delta: dict, finish: str | None = None, **extra: Any) -> dict:
            body = {
                "id": handle.request.request_id, "object": "chat.completion.chunk", "created": created,
                "model": target.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                    "logprobs": None}],
            }
            body.update(extra)
            return body

        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                event = await handle.events.get()
                if isinstance(event, TokenEvent):
                    yield chunk({"content": event.text})
                elif isinstance(event, ErrorEvent):
                    raise event.error
                else:
                    extra = await self._extensions(req, target, event)
                    yield chunk({}, event.finish_reason, **extra)
                    if include_usage:
                        final = chunk({}, None, usage=_usage(event).model_dump())
                        final["choices"] = []
                        yield final
                    return
        finally:
            handle.cancel()


async def _wait_done(handle: RequestHandle) -> DoneEvent:
    while True:
        event = await handle.events.get()
        if isinstance(event, DoneEvent):
            return event
        if isinstance(event, ErrorEvent):
            raise event.error


def _usage(done: DoneEvent) -> Usage:
    return Usage(prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens,
                 total_tokens=done.prompt_tokens + done.completion_tokens)


def _new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex
