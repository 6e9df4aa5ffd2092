"""EmbeddedBackend: chat and text completions from the local model on the engine worker (the default backend).

request (validated against the engine's request models) -> model/adapter routing (the adapter registry) -> plan
(prompt + tools + grammar, tools.py) -> chat template + tokenize and grammar compile (off the event loop) ->
engine queue -> events -> OpenAI-shaped body or chunks (openai_format.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from app.backends import openai_format as fmt
from app.backends.base import ChatCall, Completed, Served
from app.backends.embedded_stream import EmbeddedStream, latency_of, tone_text
from app.backends.tools import Plan, parse_tool_calls, plan, supports_native_tools
from app.engine.adapters import AdapterRegistry
from app.engine.constraints import TOOL_OPEN, Grammars
from app.engine.events import DoneEvent, ErrorEvent, GenerationRequest, RequestHandle
from app.engine.sampling import SamplingParams
from app.engine.string_guard import NGRAM, StringGuard, TokenTexts
from app.engine.worker import Engine
from app.errors import ContextLengthExceeded, InvalidRequest, RequestInvalid, UnsupportedField
from app.schemas.chat import UNSUPPORTED_FIELDS, ChatCompletionRequest, tool_conflicts
from app.schemas.completions import DEFAULT_COMPLETION_TOKENS, UNSUPPORTED_COMPLETION_FIELDS, CompletionRequest


def refuse_unsupported(raw: dict[str, Any], table: dict[str, str]) -> None:
    for name, what in table.items():
        if raw.get(name) not in (None, False, [], {}):
            raise UnsupportedField(f"{name}: {what} is not supported by Tonewatch", param=name)


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], raw: dict[str, Any]) -> Model:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise RequestInvalid(exc.errors()) from None


@dataclass
class _Collected:
    pieces: list[str] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)


@dataclass
class _Submitted:
    handle: RequestHandle
    plan: Plan | None  # None for text completions


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
        json_string_guard: int = NGRAM,
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        self.registry = registry
        self.base_name = base_name
        self.max_new_tokens = max_new_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.started_at = int(started_at)
        self.vocab_size = int(getattr(engine.model.config, "vocab_size", len(tokenizer)))
        self.context = int(getattr(engine.model.config, "max_position_embeddings", 0) or 1 << 30)
        self.grammars = Grammars(tokenizer, self.vocab_size, engine.eos_ids)
        self.json_string_guard = json_string_guard  # n-gram size of the guard inside JSON strings; 0: off
        self._token_texts: TokenTexts | None = None
        self.native_tools = supports_native_tools(tokenizer)

    # ---- requests -------------------------------------------------------------------------------------------
    def parse_chat(self, raw: dict[str, Any], request_id: str) -> ChatCall:
        refuse_unsupported(raw, UNSUPPORTED_FIELDS)
        req = validated(ChatCompletionRequest, raw)
        tool_conflicts(req)
        self._check_bias(req.logit_bias)
        user = next((m.text() for m in reversed(req.messages) if m.role in ("user", "tool")), None)
        return ChatCall(
            raw=raw,
            parsed=req,
            served=self._served(req.model),
            stream=req.stream,
            session_id=req.session_id,
            persona=req.persona,
            request_id=request_id,
            prompt_text=user,
        )

    def parse_completion(self, raw: dict[str, Any], request_id: str) -> ChatCall:
        refuse_unsupported(raw, UNSUPPORTED_COMPLETION_FIELDS)
        req = validated(CompletionRequest, raw)
        self._check_bias(req.logit_bias)
        if req.stream and len(req.prompts) > 1:
            raise InvalidRequest("a streamed completion takes one prompt", param="prompt")
        return ChatCall(
            raw=raw,
            parsed=req,
            served=self._served(req.model),
            stream=req.stream,
            session_id=req.session_id,
            persona=req.persona,
            request_id=request_id,
            prompt_text=req.prompts[0],
            kind="completion",
        )

    def _check_bias(self, bias: dict[str, float] | None) -> None:
        for key in bias or {}:
            if int(key) >= self.vocab_size:
                raise InvalidRequest(
                    f"logit_bias: token {key} is outside the vocabulary ({self.vocab_size})", param="logit_bias"
                )

    def route(self, model: str | None) -> Served:
        return self._served(model or self.base_name)

    def _served(self, model: str | None) -> Served:
        target = self.registry.resolve(model)
        return Served(model=target.model, adapter=target.adapter, label=target.adapter or "base")

    def sampling_params(self, req: ChatCompletionRequest | CompletionRequest) -> SamplingParams:
        limit = self.max_new_tokens
        asked = getattr(req, "max_completion_tokens", None)
        field_name = "max_completion_tokens" if asked is not None else "max_tokens"
        default = DEFAULT_COMPLETION_TOKENS if isinstance(req, CompletionRequest) else limit
        max_tokens = asked or req.max_tokens or min(default, limit)
        if max_tokens > limit:
            raise InvalidRequest(f"{field_name}={max_tokens} exceeds this server's limit of {limit}", param=field_name)
        if isinstance(req, CompletionRequest):
            logprobs, top = req.logprobs is not None, req.logprobs or 0
        else:
            logprobs, top = bool(req.logprobs), req.top_logprobs or 0
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            seed=req.seed,
            stop=tuple(req.stop or ()),
            logit_bias=tuple((int(k), float(v)) for k, v in (req.logit_bias or {}).items()),
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            logprobs=logprobs,
            top_logprobs=top,
        )

    def _encode_chat(self, req: ChatCompletionRequest) -> tuple[list[int], Plan, Any]:
        """Worker-free preparation (runs in a thread): prompt ids, the plan, and the grammar matcher."""
        p = plan(req, self.native_tools)
        extra: dict[str, Any] = {"tools": p.tools} if p.tools else {}
        last = p.messages[-1]
        if last["role"] == "assistant" and isinstance(last.get("content"), str) and last["content"].strip():
            # a prefilled answer (as vLLM's continue_final_message): the model goes on from its text, and the
            # response's content is what it adds
            extra["continue_final_message"] = True
        else:
            extra["add_generation_prompt"] = True
        encoded = self.tokenizer.apply_chat_template(p.messages, tokenize=True, **extra)
        ids = list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
        self._check_length(len(ids), "messages")
        matcher = None
        if p.grammar:
            matcher = self.grammars.matcher(p.grammar, p.grammar_param or "request", p.grammar_parts)
        return ids, p, matcher

    def _encode_prompt(self, prompt: str) -> list[int]:
        ids = list(self.tokenizer(prompt)["input_ids"])
        self._check_length(len(ids), "prompt")
        return ids

    def _check_length(self, n: int, param: str) -> None:
        if n > self.max_prompt_tokens:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.max_prompt_tokens} tokens. However, your {param} "
                f"resulted in {n} tokens. Please reduce the length of the {param}.",
                param=param,
            )

    @staticmethod
    def _request(call: ChatCall) -> ChatCompletionRequest | CompletionRequest:
        """The request model parse_chat / parse_completion put on the call."""
        req = call.parsed
        assert isinstance(req, ChatCompletionRequest | CompletionRequest), type(req)
        return req

    async def _submit(self, call: ChatCall) -> list[_Submitted]:
        req = self._request(call)
        params = self.sampling_params(req)
        adapter, rid = call.served.adapter, call.request_id
        if call.kind == "completion":
            assert isinstance(req, CompletionRequest)
            prompts = await asyncio.to_thread(lambda: [self._encode_prompt(p) for p in req.prompts])
            return [
                _Submitted(self.engine.submit(GenerationRequest(ids, params, adapter, rid)), None) for ids in prompts
            ]
        assert isinstance(req, ChatCompletionRequest)
        ids, p, matcher = await asyncio.to_thread(self._encode_chat, req)
        guard = None
        if p.structured and matcher is not None and self.json_string_guard:
            if self._token_texts is None:
                self._token_texts = await asyncio.to_thread(TokenTexts.of, self.tokenizer, self.vocab_size)
            guard = StringGuard(self._token_texts, self.json_string_guard)
        request = GenerationRequest(
            ids,
            params,
            adapter,
            rid,
            matcher=matcher,
            emit_text=p.tool_mode != "required",
            cut_at=(TOOL_OPEN,) if p.tool_mode == "auto" else (),
            guard=guard,
        )
        return [_Submitted(self.engine.submit(request), p)]

    # ---- non-stream -----------------------------------------------------------------------------------------
    async def chat(self, call: ChatCall, partial: list[str] | None = None) -> Completed:
        submitted = await self._submit(call)
        collected = [
            _Collected(pieces=partial if (partial is not None and i == 0) else []) for i in range(len(submitted))
        ]
        try:
            decode = self.tokenizer.decode
            done = await asyncio.gather(
                *(_wait_done(s.handle, c, decode) for s, c in zip(submitted, collected, strict=True))
            )
        finally:
            for s in submitted:
                s.handle.cancel()  # no-op when finished; frees the row if we were cancelled (client gone)
        self.registry.count_served(call.served.adapter)
        usage = fmt.usage(sum(d.prompt_tokens for d in done), sum(d.completion_tokens for d in done))
        wants_logprobs = self._request(call).logprobs not in (None, False)
        if call.kind == "completion":
            choices = [
                {
                    "index": i,
                    "text": d.text,
                    "finish_reason": d.finish_reason,
                    "logprobs": fmt.completion_logprobs(c.logprobs if wants_logprobs else None),
                }
                for i, (d, c) in enumerate(zip(done, collected, strict=True))
            ]
            body = fmt.completion_body(call.request_id, call.served.model, choices, usage)
            return Completed(
                body=body,
                served=call.served,
                text=done[0].text,
                finish_reason=done[0].finish_reason,
                latency=latency_of(done[0]),
            )
        first, p = done[0], submitted[0].plan
        assert p is not None
        content, calls = parse_tool_calls(first.text) if p.tool_mode else (first.text, [])
        finish = "tool_calls" if calls else first.finish_reason
        body = fmt.chat_body(
            call.request_id,
            call.served.model,
            content,
            finish,
            usage,
            tool_calls=calls,
            logprobs=collected[0].logprobs if wants_logprobs else None,
        )
        text, basis = tone_text(content, p)
        return Completed(
            body=body,
            served=call.served,
            text=text,
            finish_reason=finish,
            latency=latency_of(first),
            scoreable=bool(text.strip()),
            tone_basis=basis,
        )

    # ---- stream ---------------------------------------------------------------------------------------------
    async def chat_stream(self, call: ChatCall) -> EmbeddedStream:
        [submitted] = await self._submit(call)
        options = self._request(call).stream_options
        return EmbeddedStream(
            call,
            submitted.handle,
            submitted.plan,
            bool(options and options.include_usage),
            decode=self.tokenizer.decode,
            on_done=lambda: self.registry.count_served(call.served.adapter),
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


async def _wait_done(handle: RequestHandle, collected: _Collected, decode: Callable[[list[int]], str]) -> DoneEvent:
    while True:
        event = await handle.events.get()
        if isinstance(event, DoneEvent):
            return event
        if isinstance(event, ErrorEvent):
            raise event.error
        collected.pieces.append(event.text)
        if event.logprobs:
            collected.logprobs.extend(fmt.logprob_entries(event.logprobs, decode) or [])
