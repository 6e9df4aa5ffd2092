"""POST /v1/score: tone reports for text generated elsewhere."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.api.auth import ClientDep
from app.api.body import JsonRoute
from app.api.deps import ToneDep
from app.api.errors import error_responses
from app.schemas.score import ScoreRequest, ScoreResponse

router = APIRouter(route_class=JsonRoute)


@router.post(
    "/v1/score",
    response_model=ScoreResponse,
    response_model_exclude_none=True,
    responses=error_responses(400, 401, 404, 503),
)
async def score(body: ScoreRequest, request: Request, tone: ToneDep, principal: ClientDep) -> dict[str, Any]:
    request.state.adapter_label = tone.source_label(body.adapter)
    results = await tone.score_request(body, owner=principal.owner)
    return {"object": "tone.score", "persona": body.persona, "results": results}
