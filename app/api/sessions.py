"""Session history and drift endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.api.auth import AdminDep
from app.api.deps import StateDep
from app.schemas.chat import SESSION_ID_PATTERN

router = APIRouter(prefix="/v1/sessions")
SessionPath = Annotated[str, Path(pattern=SESSION_ID_PATTERN)]


@router.get("/{session_id}")
async def get_session(session_id: SessionPath, state: StateDep,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      cursor: Annotated[int, Query(ge=0, description="next_cursor of the previous page")] = 0) -> dict:
    return await state.history.session(session_id, after=cursor, limit=limit)


@router.get("/{session_id}/drift")
async def get_drift(session_id: SessionPath, state: StateDep) -> dict:
    return await state.history.drift_state(session_id)


@router.delete("/{session_id}")
async def delete_session(session_id: SessionPath, _: AdminDep, state: StateDep) -> dict:
    existed = await state.history.delete(session_id)
    return {"deleted": session_id, "existed": existed}
