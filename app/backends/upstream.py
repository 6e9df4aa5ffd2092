"""UpstreamBackend: Tonewatch in front of an OpenAI-compatible engine (vLLM, llama.cpp, transformers serve, a hosted
API), scoring every response it relays.

The client's body is forwarded as it came (tools, response_format, logprobs, anything the upstream accepts), minus
Tonewatch's own fields (`session_id`, `persona`); the upstream's body comes back with `tone`/`drift` added. Upstream
4xx answers pass through with their status and body. Streams are relayed event by event as they arrive (no
buffering); the tone chunk is appended before `[DONE]`.

The pooled HTTP client and its error mapping are in app/backends/upstream_client.py.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.backends.base import ChatCall, Chunk, Completed, Served, StreamEnd, StreamEvent
from app.backends.upstream_client import UpstreamClient
from app.errors import ModelNotFound, RequestInvalid, UpstreamTimeout, UpstreamUnavailable
from app.metrics import Metrics
from app.schemas.chat import SessionId
from app.schemas.score import PersonaName

log = logging.getLogger("tonewatch.upstream")
OTHER = "other"  # metric label of a model the upstream does not list
DEFAULT_ALIAS = "default"


class GatewayChatFields(BaseModel):
    """What Tonewatch itself needs from a relayed request; everything else is the upstream's business."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    session_id: SessionId | None = None
    persona: PersonaName | None = None


class GatewayCompletionFields(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, max_length=256)
    prompt: str | list[Any]
    stream: bool = False
    session_id: SessionId | None = None
    persona: PersonaName | None = None


class UpstreamBackend:
    kind = "upstream"

    def __init__(self, client: UpstreamClient, metrics: Metrics, *, models_ttl_s: float = 10.0):
        self.client = client
        self.metrics = metrics
        self.models_ttl_s = models_ttl_s
        self.active: str | None = None  # routing: the model requests naming none (or "default") go to
        self._models: list[dict[str, Any]] = []
        self._models_at = 0.0
        self._ready_at = 0.0

    @property
    def base_name(self) -> str:
        return self.client.name

    # ---- what the gateway's admin API drives ------------------------------------------------------------------
    def route_default(self, model: str | None) -> None:
        """Send requests that name no model (or "default") to `model`; None: the upstream's own default."""
        self.active = model

    async def load_lora_adapter(self, name: str, path: str) -> None:
        """vLLM's dynamic LoRA loading; raises UpstreamRejected with the upstream's answer when it refuses."""
        await self.client.post_json("load_lora_adapter", {"lora_name": name, "lora_path": path})
        self.forget_models()

    async def unload_lora_adapter(self, name: str) -> None:
        await self.client.post_json("unload_lora_adapter", {"lora_name": name})
        self.forget_models()

    # ---- models -----------------------------------------------------------------------------------------------
    async def list_models(self) -> list[dict[str, Any]]:
        """The upstream's models, cached briefly; a stale list is served while the upstream blinks."""
        if self._models and time.monotonic() - self._models_at < self.models_ttl_s:
            return self._models
        try:
            body = await self.client.get_json("models", timeout_s=5.0)
        except (UpstreamUnavailable, UpstreamTimeout):
            if self._models:
                return self._models
            raise
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise UpstreamUnavailable(f"upstream {self.client.name!r} returned no model list from GET /models")
        self._models = [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        self._models_at = time.monotonic()
        return self._models

    def forget_models(self) -> None:
        """The upstream's model list changed (an adapter was loaded or unloaded through us)."""
        self._models_at = 0.0

    def served_labels(self) -> set[str]:
        return {m["id"] for m in self._models}

    def _label(self, model: str) -> str:
        return model if model in self.served_labels() else OTHER

    def _cached_default(self) -> str:
        roots = [m["id"] for m in self._models if not m.get("parent")] or [m["id"] for m in self._models]
        return roots[0] if roots else ""

    async def default_model(self) -> str:
        if self.active:
            return self.active
        models = await self.list_models()
        roots = [m["id"] for m in models if not m.get("parent")] or [m["id"] for m in models]
        if not roots:
            raise ModelNotFound(f"upstream {self.client.name!r} serves no models", param="model")
        return roots[0]

    # ---- requests ---------------------------------------------------------------------------------------------
    def parse_chat(self, raw: dict[str, Any], request_id: str) -> ChatCall:
        try:
            fields = GatewayChatFields.model_validate(raw)
        except ValidationError as exc:
            raise RequestInvalid(exc.errors()) from None
        body = {k: v for k, v in raw.items() if k not in ("session_id", "persona")}
        model = fields.model if fields.model not in (None, "", DEFAULT_ALIAS) else None
        if model is None:
            model = self.active or self._cached_default()  # "" while the model list was never fetched
        served = Served(model=model or "", adapter=model or None, label=self._label(model) if model else OTHER)
        return ChatCall(
            raw=body,
            parsed=fields,
            served=served,
            stream=fields.stream,
            session_id=fields.session_id,
            persona=fields.persona,
            request_id=request_id,
            prompt_text=_last_user_text(fields.messages),
        )

    def parse_completion(self, raw: dict[str, Any], request_id: str) -> ChatCall:
        try:
            fields = GatewayCompletionFields.model_validate(raw)
        except ValidationError as exc:
            raise RequestInvalid(exc.errors()) from None
        call = self.parse_chat({**raw, "messages": [{"role": "user", "content": ""}]}, request_id)
        call.raw.pop("messages", None)
        prompt = (
            fields.prompt
            if isinstance(fields.prompt, str)
            else next((p for p in fields.prompt if isinstance(p, str)), None)
        )
        call.parsed, call.kind, call.prompt_text = fields, "completion", prompt
        return call

    def route(self, model: str | None) -> Served:
        model = model or self._cached_default()
        return Served(model=model, adapter=model or None, label=self._label(model) if model else OTHER)

    @staticmethod
    def _path(call: ChatCall) -> str:
        return "completions" if call.kind == "completion" else "chat/completions"

    async def _route(self, call: ChatCall) -> dict[str, Any]:
        body = dict(call.raw)
        if not call.served.model:  # the model list was not fetched yet
            model = await self.default_model()
            call.served = Served(model=model, adapter=model, label=self._label(model))
        body["model"] = call.served.model  # no model or "default": the routed default (an adapter, or the first)
        return body

    async def chat(self, call: ChatCall, partial: list[str] | None = None) -> Completed:
        body = await self._route(call)
        body.pop("stream", None)
        started = time.perf_counter()
        response = await self.client.post_json(self._path(call), body)
        total = time.perf_counter() - started
        try:
            data = response.json()
        except ValueError:
            raise UpstreamUnavailable(
                f"upstream {self.client.name!r} answered 200 with a body that is not JSON"
            ) from None
        model = call.served.model
        self.metrics.upstream_latency.labels(call.served.label).observe(total)
        choice = (data.get("choices") or [{}])[0] if isinstance(data, dict) else {}
        message = choice.get("message") or {}
        text = _text_of(choice.get("text") if call.kind == "completion" else message.get("content"))
        usage = data.get("usage") or {}
        return Completed(
            body=data,
            served=Served(model=data.get("model") or model, adapter=call.served.adapter, label=call.served.label),
            text=text,
            finish_reason=choice.get("finish_reason") or "stop",
            latency={"total_s": round(total, 4), "tokens": int(usage.get("completion_tokens") or 0)},
            scoreable=bool(text.strip()) or not message.get("tool_calls"),
        )

    async def chat_stream(self, call: ChatCall) -> UpstreamStream:
        body = await self._route(call)
        started = time.perf_counter()
        response = await self.client.open_stream(self._path(call), body)
        return UpstreamStream(response, call.served, started, self.client, self.metrics)

    async def ready(self) -> str | None:
        # a recent success answers for the upstream, unless a request failed against it since
        if time.monotonic() - self._ready_at < 2.0 and self._ready_at > self.client.failed_at:
            return None
        try:
            await self.client.get_json("models", timeout_s=2.0)  # a real round trip, never the cached list
        except Exception as exc:
            return f"upstream {self.client.name!r} at {self.client.base_url}: {getattr(exc, 'message', exc)}"
        self._ready_at = time.monotonic()
        return None

    async def close(self) -> None:
        await self.client.close()


class UpstreamStream:
    """The upstream's SSE stream, relayed event by event; tracks the text, tool calls and the finish reason."""

    def __init__(
        self, response: httpx.Response, served: Served, started: float, client: UpstreamClient, metrics: Metrics
    ):
        self.response = response
        self.served = served
        self.started = started
        self.client = client
        self.metrics = metrics
        self._pieces: list[str] = []
        self._tool_calls = False
        self._finish: str | None = None
        self._tokens = 0
        self._ttft: float | None = None

    def _observe(self, data: str) -> str:
        try:
            event = json.loads(data)
        except ValueError:
            return ""
        if not isinstance(event, dict):
            return ""
        usage = event.get("usage")
        if isinstance(usage, dict) and usage.get("completion_tokens"):
            self._tokens = int(usage["completion_tokens"])
        text = ""
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            piece = _text_of(delta.get("content") if "delta" in choice else choice.get("text"))
            if piece:
                text += piece
            if delta.get("tool_calls"):
                self._tool_calls = True
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        if text and self._ttft is None:
            self._ttft = time.perf_counter() - self.started
            self.metrics.upstream_ttft.labels(self.served.label).observe(self._ttft)
        return text

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        data_lines: list[str] = []
        try:
            async for line in self.response.aiter_lines():
                if line.startswith("data:"):
                    data_lines.append(line[5:].lstrip(" "))
                    continue
                if line or not data_lines:
                    continue  # comments (": ping"), event/id fields, blank keep-alives
                data = "\n".join(data_lines)
                data_lines = []
                if data.strip() == "[DONE]":
                    break
                text = self._observe(data)
                if text:
                    self._pieces.append(text)
                yield Chunk(data.encode(), text=text)
            else:
                if data_lines and data_lines[-1].strip() != "[DONE]":
                    raise UpstreamUnavailable(f"upstream {self.client.name!r} closed the stream mid-response")
                if self._finish is None and not data_lines:
                    raise UpstreamUnavailable(f"upstream {self.client.name!r} closed the stream without finishing")
        except httpx.HTTPError as exc:
            raise self.client.failure(exc, "streaming") from None
        finally:
            await self.response.aclose()
        total = time.perf_counter() - self.started
        self.metrics.upstream_latency.labels(self.served.label).observe(total)
        text = "".join(self._pieces)
        latency = {"total_s": round(total, 4), "tokens": self._tokens}
        if self._ttft is not None:
            latency["ttft_s"] = round(self._ttft, 4)
        yield StreamEnd(
            text=text,
            finish_reason=self._finish or "stop",
            latency=latency,
            scoreable=bool(text.strip()) or not self._tool_calls,
        )

    def partial_text(self) -> str:
        return "".join(self._pieces)

    def leftover(self) -> StreamEnd | None:
        return None

    async def aclose(self) -> None:
        await self.response.aclose()  # closing the connection makes the upstream stop generating


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content")) or None
    return None
