"""OpenAI response shapes the embedded engine produces: chat.completion (+ chunks) and text_completion (+ chunks),
and the per-token logprob entries built from the engine's raw (token, logprob, top) picks. Fields the spec requires
are always present (`logprobs: null`, `message.refusal: null`, `system_fingerprint`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from app.engine.sampling import Pick

SYSTEM_FINGERPRINT = "tonewatch-embedded"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def logprob_entries(picks: list[Pick] | None, decode: Callable[[list[int]], str]) -> list[dict] | None:
    """OpenAI's per-token logprob entries (token text, logprob, UTF-8 bytes, top alternatives) of raw picks."""
    if picks is None:
        return None

    def one(token: int, logprob: float) -> dict:
        text = decode([token])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return [
        {**one(p.token, float(p.logprob or 0.0)), "top_logprobs": [one(t, lp) for t, lp in p.top or []]} for p in picks
    ]


def extension_chunk(request_id: str, model: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A last stream chunk with no choices that carries Tonewatch's own fields (tone, drift), for a stream whose
    backend had no finish chunk of its own to put them on (a relayed upstream stream)."""
    return {
        "id": request_id,
        "object": "text_completion" if kind == "completion" else "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        **fields,
    }


def chat_logprobs(entries: list[dict] | None) -> dict[str, Any] | None:
    return None if entries is None else {"content": entries, "refusal": None}


def chat_body(
    request_id: str,
    model: str,
    content: str | None,
    finish_reason: str,
    usage_: dict[str, int],
    *,
    tool_calls: list[dict] | None = None,
    logprobs: list[dict] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {"index": 0, "message": message, "logprobs": chat_logprobs(logprobs), "finish_reason": finish_reason}
        ],
        "usage": usage_,
    }


class ChatChunks:
    def __init__(self, request_id: str, model: str):
        self.request_id, self.model, self.created = request_id, model, int(time.time())

    def chunk(self, delta: dict[str, Any], finish: str | None = None, logprobs: list[dict] | None = None) -> dict:
        return {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": chat_logprobs(logprobs), "finish_reason": finish}],
        }

    def usage_chunk(self, usage_: dict[str, int]) -> dict:
        return {**self.chunk({}), "choices": [], "usage": usage_}

    def tool_call_chunk(self, calls: list[dict]) -> dict:
        return self.chunk({"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]})


def completion_logprobs(entries: list[dict] | None) -> dict[str, Any] | None:
    if entries is None:
        return None
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": offsets,
    }


def completion_body(request_id: str, model: str, choices: list[dict[str, Any]], usage_: dict[str, int]) -> dict:
    return {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": usage_,
    }


class CompletionChunks:
    def __init__(self, request_id: str, model: str):
        self.request_id, self.model, self.created = request_id, model, int(time.time())

    def chunk(self, text: str, finish: str | None = None, logprobs: list[dict] | None = None) -> dict:
        return {
            "id": self.request_id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "text": text, "logprobs": completion_logprobs(logprobs), "finish_reason": finish}],
        }

    def usage_chunk(self, usage_: dict[str, int]) -> dict:
        return {**self.chunk(""), "choices": [], "usage": usage_}
