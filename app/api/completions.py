"""POST /v1/completions (legacy text completions) and POST /v1/responses (a text subset)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.api.auth import ClientDep
from app.api.body import JsonRoute
from app.api.chat import CLIENT_CLOSED, connection_probe, read_json, sse, until_disconnect
from app.api.deps import ChatDep, ResponsesDep
from app.api.errors import STREAMED, envelope, error_responses
from app.errors import TonewatchError
from app.schemas.completions import CompletionRequest
from app.schemas.responses import ResponseRequest

router = APIRouter(route_class=JsonRoute)
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _body_doc(model) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


@router.post(
    "/v1/completions",
    responses={**STREAMED, **error_responses(400, 401, 404, 429, 500, 502, 503, 504)},
    openapi_extra=_body_doc(CompletionRequest),
)
async def completions(request: Request, chat: ChatDep, principal: ClientDep) -> Response:
    call = await chat.prepare(await read_json(request), kind="completion", owner=principal.owner)
    request.state.adapter_label = call.served.label
    if call.stream:
        return StreamingResponse(sse(await chat.stream(call)), media_type="text/event-stream", headers=STREAM_HEADERS)
    body = await until_disconnect(request, chat.complete(call, connection_probe(request)))
    return Response(status_code=CLIENT_CLOSED) if body is None else JSONResponse(body)


async def response_events(events: AsyncIterator[tuple[str, dict]]) -> AsyncIterator[bytes]:
    try:
        async for kind, data in events:
            yield f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
    except TonewatchError as exc:
        payload = {"type": "error", **envelope(exc)["error"]}
        yield f"event: error\ndata: {json.dumps(payload)}\n\n".encode()


@router.post(
    "/v1/responses",
    responses={**STREAMED, **error_responses(400, 401, 404, 429, 500, 502, 503, 504)},
    openapi_extra=_body_doc(ResponseRequest),
)
async def responses(request: Request, service: ResponsesDep, principal: ClientDep) -> Response:
    call, req = await service.prepare(await read_json(request), owner=principal.owner)
    request.state.adapter_label = call.served.label
    if call.stream:
        events = await service.stream(call, req)
        return StreamingResponse(response_events(events), media_type="text/event-stream", headers=STREAM_HEADERS)
    body = await until_disconnect(request, service.complete(call, req, connection_probe(request)))
    return Response(status_code=CLIENT_CLOSED) if body is None else JSONResponse(body)
