"""The components one app instance owns, built in the lifespan (never at import time)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.engine.adapters import AdapterRegistry
from app.engine.worker import Engine
from app.metrics import Metrics
from app.services.chat import ChatService
from app.services.history import HistoryService
from app.services.tone import ToneService
from app.store.base import SessionStore

# A readiness check returns None when healthy, else a reason; `degraded` ones don't make /readyz fail.
ReadinessCheck = Callable[[], Awaitable[str | None]]


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    engine: Engine
    chat: ChatService
    tone: ToneService
    store: SessionStore
    history: HistoryService
    adapters: AdapterRegistry
    base_name: str
    started_at: float
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    degraded_checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
