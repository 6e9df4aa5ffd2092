"""Session history responses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class DriftView(BaseModel):
    score: float = Field(description="EWMA of the per-turn statistic (z units): about 0 in persona")
    alert: bool
    detector: str | None = None
    cusum: float
    threshold: float = Field(description="the CUSUM's alarm threshold")
    ewma_limit: float | None = Field(None, description="the EWMA's alarm limit (score above it alarms)")
    dispersion: float
    turns: int


class TurnPublic(BaseModel):
    session_id: str
    request_id: str
    seq: int
    ts: float
    kind: str
    adapter: str
    persona: str | None
    prompt: str | None
    response: str
    tone: dict[str, Any]
    latency: dict[str, Any]
    drift: dict[str, Any] | None
    spikes: list[str]
    finish_reason: str | None
    delivered: bool | None


class SessionPage(BaseModel):
    object: str = "session"
    session_id: str
    turns: list[TurnPublic]
    next_cursor: int | None
    drift: DriftView
    pending_turns: int = 0


class SessionDrift(DriftView):
    session_id: str


class DeletedSession(BaseModel):
    deleted: str
    existed: bool


class WorstTurn(BaseModel):
    seq: int = Field(description="the turn farthest from the persona")
    persona_distance: float


class SessionSummary(BaseModel):
    session_id: str
    turns: int = Field(description="turns recorded in the session")
    first_ts: float = Field(description="first activity, unix seconds")
    last_ts: float = Field(description="last activity, unix seconds")
    adapter: str = Field(description="the adapter or model that served the last turn")
    persona: str | None
    owner: str | None = Field(description="id of the client key that created the session (never the key itself)")
    label: str | None = Field(description="tone label of the last scored turn")
    drift: DriftView = Field(description="the drift detector after the last scored turn")
    labels: dict[str, int] = Field(description="turns per tone label")
    worst: WorstTurn | None = Field(description="the turn with the largest persona distance")


class SessionList(BaseModel):
    object: str = "list"
    data: list[SessionSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")
