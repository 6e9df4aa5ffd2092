"""POST /v1/score: tone reports for text generated elsewhere."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.deps import StateDep
from app.schemas.score import ScoreRequest

router = APIRouter()


@router.post("/v1/score")
async def score(body: ScoreRequest, request: Request, state: StateDep) -> dict:
    adapter = body.adapter or "external"
    request.state.adapter = adapter
    results = await state.tone.score_request(body, adapter)
    return {"object": "tone.score", "persona": body.persona, "results": results}
