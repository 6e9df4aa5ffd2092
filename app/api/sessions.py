"""Session history and drift endpoints (reads need a client key or the admin token; see api/auth.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from app.api.auth import AdminDep, HistoryReaderDep
from app.api.body import JsonRoute
from app.api.deps import HistoryDep
from app.api.errors import error_responses
from app.schemas.chat import SESSION_ID_PATTERN
from app.schemas.sessions import DeletedSession, SessionDrift, SessionPage

router = APIRouter(prefix="/v1/sessions", route_class=JsonRoute)
SessionPath = Annotated[str, Path(pattern=SESSION_ID_PATTERN)]
MAX_CURSOR = 2**63 - 1


@router.get("/{session_id}", response_model=SessionPage, responses=error_responses(400, 401, 403, 404, 503))
async def get_session(
    session_id: SessionPath,
    history: HistoryDep,
    _: HistoryReaderDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int, Query(ge=0, le=MAX_CURSOR, description="next_cursor of the previous page")] = 0,
) -> dict[str, Any]:
    return await history.session(session_id, after=cursor, limit=limit)


@router.get("/{session_id}/drift", response_model=SessionDrift, responses=error_responses(400, 401, 403, 404, 503))
async def get_drift(session_id: SessionPath, history: HistoryDep, _: HistoryReaderDep) -> dict[str, Any]:
    return await history.drift_state(session_id)


@router.delete("/{session_id}", response_model=DeletedSession, responses=error_responses(400, 401, 403, 503))
async def delete_session(session_id: SessionPath, history: HistoryDep, _: AdminDep) -> dict[str, Any]:
    existed = await history.delete(session_id)
    return {"deleted": session_id, "existed": existed}
