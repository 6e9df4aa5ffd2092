"""Session history, list, export and drift endpoints (reads need a client key or the admin token; a client key sees
only the sessions its requests created: see api/auth.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import StreamingResponse

from app.api.auth import AdminDep, HistoryReaderDep
from app.api.body import JsonRoute
from app.api.deps import HistoryDep
from app.api.errors import error_responses
from app.schemas.chat import SESSION_ID_PATTERN
from app.schemas.sessions import DeletedSession, SessionDrift, SessionList, SessionPage
from app.store.summary import SessionQuery

router = APIRouter(prefix="/v1/sessions", route_class=JsonRoute)
SessionPath = Annotated[str, Path(pattern=SESSION_ID_PATTERN)]
MAX_CURSOR = 2**63 - 1
NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"  # adapter, persona and label names as the service accepts them
MAX_TS = 1e11  # unix seconds, year 5138: beyond it a bound is a mistake


class _Filters:
    """The filters shared by the list and the export (query parameters)."""

    def __init__(
        self,
        alerting: Annotated[bool | None, Query(description="only sessions whose detector is (not) in alarm")] = None,
        adapter: Annotated[str | None, Query(pattern=NAME, description="adapter that served the last turn")] = None,
        persona: Annotated[str | None, Query(pattern=NAME)] = None,
        label: Annotated[str | None, Query(pattern=NAME, description="tone label of the last scored turn")] = None,
        since: Annotated[float | None, Query(ge=0, le=MAX_TS, description="last activity at or after (unix s)")] = None,
        until: Annotated[
            float | None, Query(ge=0, le=MAX_TS, description="last activity at or before (unix s)")
        ] = None,
        order: Annotated[
            Literal["recent", "drift"], Query(description="recent: last activity first; drift: highest drift first")
        ] = "recent",
    ):
        self.alerting, self.adapter, self.persona, self.label = alerting, adapter, persona, label
        self.since, self.until, self.order = since, until, order

    def query(self, reader: str | None, limit: int) -> SessionQuery:
        return SessionQuery(
            owner=reader,
            alerting=self.alerting,
            adapter=self.adapter,
            persona=self.persona,
            label=self.label,
            since=self.since,
            until=self.until,
            order=self.order,
            limit=limit,
        )


FiltersDep = Annotated[_Filters, Depends()]


@router.get("", response_model=SessionList, responses=error_responses(400, 401, 403, 404, 503))
async def list_sessions(
    history: HistoryDep,
    principal: HistoryReaderDep,
    filters: FiltersDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=r"^[A-Za-z0-9_-]+$",
            description="next_cursor of the previous page; good for 10 minutes, for the caller it was issued to "
            "(404 after that: list again)",
        ),
    ] = None,
) -> dict[str, Any]:
    """Sessions, newest activity (or highest drift) first. A walk with `cursor` visits every session that matched
    when its first page was read exactly once, while new turns arrive; a cursor is good for 10 minutes."""
    return await history.list_sessions(filters.query(principal.reader, limit), cursor)


@router.get(
    "/export",
    responses={
        200: {
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            "description": "turns, one per line",
        },
        **error_responses(400, 401, 403, 503),
    },
)
async def export_sessions(history: HistoryDep, principal: HistoryReaderDep, filters: FiltersDep) -> StreamingResponse:
    """Every turn of every matching session as NDJSON (one TurnPublic per line, sessions in list order), streamed."""
    lines = await history.export(filters.query(principal.reader, 200))
    return StreamingResponse(lines, media_type="application/x-ndjson")


@router.get("/{session_id}", response_model=SessionPage, responses=error_responses(400, 401, 403, 404, 503))
async def get_session(
    session_id: SessionPath,
    history: HistoryDep,
    principal: HistoryReaderDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int, Query(ge=0, le=MAX_CURSOR, description="next_cursor of the previous page")] = 0,
) -> dict[str, Any]:
    return await history.session(session_id, after=cursor, limit=limit, reader=principal.reader)


@router.get("/{session_id}/drift", response_model=SessionDrift, responses=error_responses(400, 401, 403, 404, 503))
async def get_drift(session_id: SessionPath, history: HistoryDep, principal: HistoryReaderDep) -> dict[str, Any]:
    return await history.drift_state(session_id, reader=principal.reader)


@router.delete("/{session_id}", response_model=DeletedSession, responses=error_responses(400, 401, 403, 503))
async def delete_session(session_id: SessionPath, history: HistoryDep, _: AdminDep) -> dict[str, Any]:
    existed = await history.delete(session_id)
    return {"deleted": session_id, "existed": existed}
