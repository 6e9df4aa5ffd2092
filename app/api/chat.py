"""POST /v1/chat/completions and GET /v1/models (HTTP only; the flow lives in services/chat.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.api.deps import StateDep
from app.errors import TonewatchError, error_body
from app.schemas.chat import ChatCompletion, ChatCompletionRequest, ModelList

router = APIRouter()
T = TypeVar("T")


async def cancel_on_disconnect(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run work, cancelling it if the client hangs up (FastAPI does not do this for plain responses)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise asyncio.CancelledError("client disconnected")
    finally:
        if not task.done():
            task.cancel()


async def sse(chunks: AsyncIterator[dict]) -> AsyncIterator[str]:
    try:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
    except TonewatchError as exc:  # headers are gone: report in-band, the way OpenAI does
        yield f"data: {json.dumps(error_body(exc.message, exc.type, exc.code, exc.param))}\n\n"
    yield "data: [DONE]\n\n"


@router.post("/v1/chat/completions", response_model=ChatCompletion, response_model_exclude_none=True)
async def chat_completions(body: ChatCompletionRequest, request: Request, state: StateDep):
    target = state.chat.resolve_target(body.model)
    state.tone.scorer.get_persona(body.persona)  # an unknown persona is a 404 before any generation
    request.state.adapter = target.adapter or "base"
    if body.stream:
        target, handle = await state.chat.start(body, target)
        return StreamingResponse(
            sse(state.chat.stream(body, target, handle)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await cancel_on_disconnect(request, state.chat.complete(body, target))


@router.get("/v1/models", response_model=ModelList, response_model_exclude_none=True)
async def list_models(state: StateDep) -> ModelList:
    return state.chat.model_list(int(state.started_at))
