"""POST /v1/chat/completions, GET /v1/models[/{id}] (HTTP only; the flow lives in services/chat.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.api.auth import ClientDep
from app.api.body import JsonRoute, json_body
from app.api.deps import ChatDep
from app.api.errors import STREAMED, envelope, error_responses
from app.errors import TonewatchError
from app.schemas.chat import ChatCompletion, ModelCard, ModelList

log = logging.getLogger("tonewatch.http")
router = APIRouter(route_class=JsonRoute)
T = TypeVar("T")
CLIENT_CLOSED = 499  # nginx's "client closed request": nobody reads it, but logs and metrics do


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object, read by the one body parser (app/api/body.py) whatever its Content-Type."""
    return await json_body(request)


async def until_disconnect(request: Request, work: Coroutine[Any, Any, T]) -> T | None:
    """Run work; cancel it when the client hangs up (FastAPI does not do this for plain responses). None then."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return None
    finally:
        if not task.done():
            task.cancel()


async def sse(chunks: AsyncIterator[dict[str, Any] | bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            data = chunk if isinstance(chunk, bytes) else json.dumps(chunk, separators=(",", ":")).encode()
            yield b"data: " + data + b"\n\n"
    except TonewatchError as exc:  # headers are gone: report in-band, the way OpenAI does
        yield b"data: " + json.dumps(envelope(exc)).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def connection_probe(request: Request):
    async def connected() -> bool:
        return not await request.is_disconnected()

    return connected


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={**STREAMED, **error_responses(400, 401, 404, 429, 500, 502, 503, 504)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
        }
    },
)
async def chat_completions(request: Request, chat: ChatDep, principal: ClientDep) -> Response:
    call = await chat.prepare(await read_json(request), owner=principal.owner)
    request.state.adapter_label = call.served.label
    if call.stream:
        chunks = await chat.stream(call)
        return StreamingResponse(
            sse(chunks),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    body = await until_disconnect(request, chat.complete(call, connection_probe(request)))
    if body is None:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(body)


@router.get("/v1/models", response_model=ModelList, responses=error_responses(401))
async def list_models(chat: ChatDep, _: ClientDep) -> dict[str, Any]:
    return {"object": "list", "data": await chat.list_models()}


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=error_responses(401, 404))
async def get_model(model_id: str, chat: ChatDep, _: ClientDep) -> dict[str, Any]:
    return await chat.get_model(model_id)
