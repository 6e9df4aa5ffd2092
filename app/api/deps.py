"""FastAPI dependencies, declared once as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import EngineUnavailable
from app.state import AppState


def get_state(request: Request) -> AppState:
    state = getattr(request.app.state, "tw", None)
    if state is None:
        raise EngineUnavailable("service is still starting")
    return state


StateDep = Annotated[AppState, Depends(get_state)]
