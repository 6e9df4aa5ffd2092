"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.body import JsonRoute
from app.store.base import StoreUnavailable

router = APIRouter(route_class=JsonRoute)


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "alive"}


@router.get("/readyz", responses={503: {"description": "Not ready: the body names why"}})
async def readyz(request: Request) -> JSONResponse:
    """200 "ready", 200 "degraded" (serving, but history spills locally), or 503 with reasons."""
    state = getattr(request.app.state, "tw", None)
    if state is None:
        return JSONResponse({"status": "not_ready", "reasons": {"model": "still loading"}}, status_code=503)
    reasons = {}
    backend_problem = await state.backend.ready()
    if backend_problem:
        reasons[state.backend.kind] = backend_problem
    if reasons:
        return JSONResponse({"status": "not_ready", "reasons": reasons}, status_code=503)
    degraded = {}
    try:
        await state.store.ping()
    except StoreUnavailable as exc:
        degraded["store"] = f"unreachable ({exc}); turns spill locally and are replayed when it returns"
    if state.spill.spilled:
        degraded["spill"] = f"{state.spill.spilled} turns waiting in the local spill"
    body = {"status": "degraded" if degraded else "ready", "model": state.base_name, "backend": state.backend.kind}
    if degraded:
        body["degraded"] = degraded
    body["control"] = state.control.status()  # the shared document's version this replica applied
    body["replica"] = state.settings.replica_name
    if state.startup_notes:
        body["notes"] = state.startup_notes
    if state.platform is not None:
        body["platform"] = state.platform.as_dict()  # the CPU and what start-up measured and chose for it
    return JSONResponse(body)


@router.get(
    "/metrics", response_class=PlainTextResponse, responses={200: {"description": "Prometheus text exposition format"}}
)
async def metrics(request: Request) -> Response:
    state = getattr(request.app.state, "tw", None)
    if state is None:
        return Response(b"", media_type=CONTENT_TYPE_LATEST)
    # rendering thousands of series takes a while: never on the event loop
    payload = await asyncio.to_thread(generate_latest, state.metrics.registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
