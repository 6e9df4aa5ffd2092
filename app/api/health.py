"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "alive"}


async def _run_checks(checks: dict) -> dict[str, str]:
    async def one(check):
        try:
            return await asyncio.wait_for(check(), timeout=2.0)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    names = list(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    return {n: r for n, r in zip(names, results, strict=True) if r}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    state = getattr(request.app.state, "tw", None)
    if state is None:
        return JSONResponse({"status": "not_ready", "reasons": {"model": "still loading"}}, status_code=503)
    reasons = await _run_checks(state.readiness)
    if not state.engine.alive:
        reasons["engine"] = "worker thread is not running"
    if reasons:
        return JSONResponse({"status": "not_ready", "reasons": reasons}, status_code=503)
    degraded = await _run_checks(state.degraded_checks)
    body = {"status": "degraded" if degraded else "ready", "model": state.base_name}
    if degraded:
        body["degraded"] = degraded
    return JSONResponse(body)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = getattr(request.app.state, "tw", None)
    if state is None:
        return Response(b"", media_type=CONTENT_TYPE_LATEST)
    state.metrics.queue_depth.set(state.engine.queue_depth)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
