"""FastAPI dependencies, declared once as Annotated aliases (routers take services, not the whole state)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import EngineUnavailable
from app.services.adapters import AdapterService
from app.services.admin import AdminService
from app.services.chat import ChatService
from app.services.history import HistoryService
from app.services.responses import ResponsesService
from app.services.tone import ToneService
from app.state import AppState


def get_state(request: Request) -> AppState:
    state = getattr(request.app.state, "tw", None)
    if state is None:
        raise EngineUnavailable("service is still starting")
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def _chat(state: StateDep) -> ChatService:
    return state.chat


def _tone(state: StateDep) -> ToneService:
    return state.tone


def _history(state: StateDep) -> HistoryService:
    return state.history


def _adapters(state: StateDep) -> AdapterService:
    return state.adapters


def _responses(state: StateDep) -> ResponsesService:
    return state.responses


def _admin(state: StateDep) -> AdminService:
    return state.admin


ChatDep = Annotated[ChatService, Depends(_chat)]
ToneDep = Annotated[ToneService, Depends(_tone)]
HistoryDep = Annotated[HistoryService, Depends(_history)]
AdaptersDep = Annotated[AdapterService, Depends(_adapters)]
ResponsesDep = Annotated[ResponsesService, Depends(_responses)]
AdminServiceDep = Annotated[AdminService, Depends(_admin)]
