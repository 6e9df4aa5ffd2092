"""POST /v1/responses (a text subset) on top of chat: the request becomes a chat call (instructions -> a system
message, input -> messages), generation, tone and recording go through ChatService unchanged (so it works on the
embedded engine and through an upstream alike), and the answer is written back as a Response object or as the
Responses stream events the OpenAI SDK and the Vercel AI SDK read."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from app.backends.base import ChatCall
from app.errors import RequestInvalid, TonewatchError, UnsupportedField
from app.schemas.responses import UNSUPPORTED_RESPONSE_FIELDS, ResponseRequest
from app.services.chat import ChatService

Event = tuple[str, dict[str, Any]]


class ResponsesService:
    def __init__(self, chat: ChatService):
        self.chat = chat

    def parse(self, raw: dict[str, Any]) -> tuple[ChatCall, ResponseRequest]:
        for name, what in UNSUPPORTED_RESPONSE_FIELDS.items():
            if raw.get(name) not in (None, False, [], {}):
                raise UnsupportedField(f"{name}: {what} is not supported by Tonewatch", param=name)
        try:
            req = ResponseRequest.model_validate(raw)
        except ValidationError as exc:
            raise RequestInvalid(exc.errors()) from None
        messages: list[dict[str, Any]] = []
        if req.instructions:
            messages.append({"role": "system", "content": req.instructions})
        if isinstance(req.input, str):
            messages.append({"role": "user", "content": req.input})
        else:
            messages += [{"role": m.role, "content": m.text()} for m in req.input]
        chat_raw: dict[str, Any] = {"messages": messages, "stream": req.stream}
        for ours, theirs in (
            ("model", "model"),
            ("max_output_tokens", "max_completion_tokens"),
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("session_id", "session_id"),
            ("persona", "persona"),
        ):
            value = getattr(req, ours)
            if value is not None:
                chat_raw[theirs] = value
        if req.stream:
            chat_raw["stream_options"] = {"include_usage": True}
        call = self.chat.parse(chat_raw)
        call.kind, call.request_id = "response", "resp_" + uuid.uuid4().hex
        return call, req

    async def prepare(self, raw: dict[str, Any], owner: str | None = None) -> tuple[ChatCall, ResponseRequest]:
        call, req = self.parse(raw)
        await self.chat.claim(call, owner)
        await self.chat.route_experiment(call, req.model)
        return call, req

    async def complete(
        self, call: ChatCall, req: ResponseRequest, client_connected: Callable[[], Awaitable[bool]]
    ) -> dict[str, Any]:
        body = await self.chat.complete(call, client_connected)
        choice = (body.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        usage = body.get("usage") or {}
        out = _response(call, req, text, choice.get("finish_reason"), usage, status="completed")
        for key in ("tone", "drift"):
            if key in body:
                out[key] = body[key]
        return out

    async def stream(self, call: ChatCall, req: ResponseRequest) -> AsyncIterator[Event]:
        chunks = await self.chat.stream(call)
        return self._events(call, req, chunks)

    async def _events(
        self, call: ChatCall, req: ResponseRequest, chunks: AsyncIterator[dict[str, Any] | bytes]
    ) -> AsyncIterator[Event]:
        seq = iter(range(1_000_000))
        item_id = "msg_" + uuid.uuid4().hex
        pending = _response(call, req, "", None, {}, status="in_progress")
        pending["output"] = []
        yield "response.created", {"type": "response.created", "sequence_number": next(seq), "response": pending}
        yield (
            "response.in_progress",
            {"type": "response.in_progress", "sequence_number": next(seq), "response": pending},
        )
        item = {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}
        yield (
            "response.output_item.added",
            {"type": "response.output_item.added", "sequence_number": next(seq), "output_index": 0, "item": item},
        )
        part = {"type": "output_text", "text": "", "annotations": []}
        yield (
            "response.content_part.added",
            {
                "type": "response.content_part.added",
                "sequence_number": next(seq),
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": part,
            },
        )
        text = ""
        finish: str | None = None
        usage: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        try:
            async for chunk in chunks:
                data = json.loads(chunk) if isinstance(chunk, bytes) else chunk
                for choice in data.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content") or ""
                    if delta:
                        text += delta
                        yield (
                            "response.output_text.delta",
                            {
                                "type": "response.output_text.delta",
                                "sequence_number": next(seq),
                                "item_id": item_id,
                                "output_index": 0,
                                "content_index": 0,
                                "delta": delta,
                                "logprobs": [],
                            },
                        )
                    finish = choice.get("finish_reason") or finish
                usage = data.get("usage") or usage
                extra.update({k: data[k] for k in ("tone", "drift") if k in data})
        except TonewatchError as exc:
            yield (
                "error",
                {
                    "type": "error",
                    "sequence_number": next(seq),
                    "code": exc.code,
                    "message": exc.message,
                    "param": exc.param,
                },
            )
            return
        yield (
            "response.output_text.done",
            {
                "type": "response.output_text.done",
                "sequence_number": next(seq),
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "text": text,
                "logprobs": [],
            },
        )
        part = {"type": "output_text", "text": text, "annotations": []}
        yield (
            "response.content_part.done",
            {
                "type": "response.content_part.done",
                "sequence_number": next(seq),
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": part,
            },
        )
        final = _response(call, req, text, finish, usage, status="completed", item_id=item_id)
        final.update(extra)
        yield (
            "response.output_item.done",
            {
                "type": "response.output_item.done",
                "sequence_number": next(seq),
                "output_index": 0,
                "item": final["output"][0],
            },
        )
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        yield kind, {"type": kind, "sequence_number": next(seq), "response": final}


def _response(
    call: ChatCall,
    req: ResponseRequest,
    text: str,
    finish: str | None,
    usage: dict[str, Any],
    *,
    status: str,
    item_id: str | None = None,
) -> dict[str, Any]:
    incomplete = finish == "length"
    if status == "completed" and incomplete:
        status = "incomplete"
    message = {
        "type": "message",
        "id": item_id or "msg_" + uuid.uuid4().hex,
        "status": "incomplete" if incomplete else "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    prompt_tokens, completion_tokens = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {
        "id": call.request_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": call.served.model,
        "output": [message],
        "output_text": text,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "parallel_tool_calls": False,
        "tool_choice": "none",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "metadata": req.metadata or {},
        "store": False,
        "usage": {
            "input_tokens": prompt_tokens,
            "output_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
