"""The components one app instance owns, built in the lifespan (never at import time)."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.backends.base import ChatBackend
from app.config import Settings
from app.engine.cpu import PlatformReport
from app.metrics import Metrics
from app.services.adapters import AdapterService
from app.services.admin import AdminService
from app.services.chat import ChatService
from app.services.control import ControlPlane
from app.services.history import HistoryService
from app.services.responses import ResponsesService
from app.services.tone import ToneService
from app.services.turns import TurnRecorder
from app.store.guard import GuardedStore
from app.store.spill import ResilientHistory
from app.telemetry import NO_TELEMETRY, Telemetry


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    backend: ChatBackend
    chat: ChatService
    responses: ResponsesService
    control: ControlPlane
    admin: AdminService
    tone: ToneService
    recorder: TurnRecorder
    history: HistoryService
    adapters: AdapterService
    store: GuardedStore
    spill: ResilientHistory
    base_name: str
    started_at: float
    startup_notes: list[str] = field(default_factory=list)  # e.g. adapters skipped at start-up, shown in /readyz
    platform: PlatformReport | None = None  # the CPU and the choices measured for it, shown in /readyz
    telemetry: Telemetry = NO_TELEMETRY  # OpenTelemetry export (app.telemetry), a no-op unless OTEL_* configure it
