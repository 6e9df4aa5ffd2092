"""Session history responses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class DriftView(BaseModel):
    score: float
    alert: bool
    detector: str | None = None
    cusum: float
    threshold: float
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
