"""create_app(settings): the app factory. The lifespan builds everything through constructors, in the order data
flows (backend -> scorer -> store -> history -> services); nothing happens at import time."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import adapters, chat, completions, console, health, personas, score, sessions
from app.api.errors import install_error_handlers
from app.api.middleware import ServiceMiddleware
from app.api.openapi import install_openapi
from app.backends.base import ChatBackend
from app.backends.embedded import EmbeddedBackend
from app.backends.upstream import UpstreamBackend
from app.backends.upstream_client import UpstreamClient
from app.config import Settings
from app.engine.adapters import read_manifest
from app.engine.cpu import PlatformReport
from app.metrics import Metrics
from app.services.adapters import AdapterService, EmbeddedAdapters, GatewayAdapters
from app.services.admin import AdminService, ReplicaApplier
from app.services.canary import CanaryService
from app.services.chat import ChatService
from app.services.control import ControlPlane
from app.services.history import HistoryService
from app.services.responses import ResponsesService
from app.services.session_drift import SessionDrift
from app.services.tone import ToneService
from app.services.turns import TurnRecorder
from app.stack import build_model_stack, load_scorer, platform_for
from app.state import AppState
from app.store.factory import open_store
from app.store.guard import GuardedStore
from app.store.spill import ResilientHistory
from app.system import one_torch_thread
from app.telemetry import Telemetry, build_telemetry, enabled_by_env
from app.telemetry.asgi import TracingMiddleware

log = logging.getLogger("tonewatch")


async def build_embedded(
    settings: Settings, metrics: Metrics, started_at: float, platform: PlatformReport
) -> tuple[ChatBackend, AdapterService, str, list[str]]:
    """The local model on its worker thread, with the adapter registry (app.stack, shared with `tonewatch eval`);
    (backend, adapter service, base name, notes)."""
    stack = await build_model_stack(settings, metrics, platform)
    notes: list[str] = []  # adapters are loaded by the control plane (seeded from the local manifest)
    backend = EmbeddedBackend(
        stack.engine,
        stack.tokenizer,
        stack.registry,
        base_name=stack.source.name,
        max_new_tokens=settings.max_new_tokens,
        json_string_guard=settings.json_string_guard,
        max_prompt_tokens=settings.max_prompt_tokens,
        started_at=started_at,
    )
    return backend, EmbeddedAdapters(stack.registry), stack.source.name, notes


async def build_upstream(
    settings: Settings, metrics: Metrics, telemetry: Telemetry
) -> tuple[ChatBackend, AdapterService, str, list[str]]:
    """Gateway mode: generation on an OpenAI-compatible upstream; no local LM is loaded (start-up in seconds)."""
    assert settings.upstream_url is not None
    key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
    client = UpstreamClient(
        settings.upstream_url,
        name=settings.upstream_name,
        api_key=key,
        connect_timeout_s=settings.upstream_connect_timeout_s,
        read_timeout_s=settings.upstream_read_timeout_s,
        max_connections=settings.upstream_max_connections,
        metrics=metrics,
    )
    telemetry.instrument_http_client(client.http)  # the caller's trace goes on to the engine (traceparent)
    backend = UpstreamBackend(client, metrics, models_ttl_s=settings.upstream_models_ttl_s)
    notes = []
    try:
        models = await backend.list_models()
        log.info(
            "gateway to %s (%s): %s", settings.upstream_url, settings.upstream_name, ", ".join(m["id"] for m in models)
        )
    except Exception as exc:  # serve anyway: /readyz says 503 until the upstream answers
        log.warning("upstream %s not reachable at start-up: %s", settings.upstream_url, getattr(exc, "message", exc))
        notes.append(f"upstream unreachable at start-up: {getattr(exc, 'message', exc)}")
    adapters = GatewayAdapters(
        backend,
        root=settings.adapter_root,
        upstream_root=settings.upstream_adapter_root,
        kind=settings.upstream_kind,
        max_rank=settings.max_adapter_rank,
        max_bytes=int(settings.max_adapter_mb * 2**20),
    )
    return backend, adapters, settings.upstream_name, notes


async def build_state(settings: Settings) -> AppState:
    # off-loop work (loads, adapter checks, profiles) runs torch on one thread: see app.system.one_torch_thread
    one_torch_thread()
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(thread_name_prefix="tonewatch-io", initializer=one_torch_thread)
    )
    metrics = Metrics()
    started_at = time.time()
    platform = platform_for(settings)
    telemetry = build_telemetry(
        metrics,
        provider=settings.upstream_name if settings.gateway else "tonewatch",
        redact_text=settings.history_redact,
        server_address=settings.upstream_url,
    )
    if settings.gateway:
        backend, adapter_service, base_name, notes = await build_upstream(settings, metrics, telemetry)
    else:
        backend, adapter_service, base_name, notes = await build_embedded(settings, metrics, started_at, platform)
    scorer = await load_scorer(settings, metrics, platform)
    log.info("platform: %s", platform.summary())
    store = GuardedStore(
        open_store(
            settings.redis_url, settings.db_path, max_turns=settings.history_max_turns, ttl_s=settings.history_ttl_s
        ),
        timeout_s=settings.store_timeout_s,
        probe_interval_s=settings.store_probe_interval_s,
        metrics=metrics,
    )
    sessions = SessionDrift(store, personas=scorer.personas.get)
    spill = ResilientHistory(
        store,
        settings.spill_path or settings.db_path.with_suffix(".spill.jsonl"),
        max_spill=settings.max_spill,
        metrics=metrics,
        apply_state=sessions.apply_pending,
        store_reachable=store.reachable,
    )
    await spill.start()
    history = HistoryService(
        store,
        spill,
        sessions,
        metrics,
        prompt_chars=settings.history_prompt_chars,
        redact_text=settings.history_redact,
        replica=settings.replica_name,
    )
    await history.start()
    tone = ToneService(
        scorer,
        default_persona=settings.default_persona,
        history=history,
        score_sources=settings.score_sources,
        served_models=backend.served_labels,
        telemetry=telemetry,
    )
    canary = CanaryService(store, metrics, scorer.personas)
    applier = ReplicaApplier(tone, adapter_service, canary)
    control = ControlPlane(store, applier, metrics, poll_s=settings.control_poll_s)
    await control.start(seed_document(settings))
    admin = AdminService(control, tone, adapter_service, canary, metrics)
    recorder = TurnRecorder(
        tone,
        history,
        metrics,
        canary=canary,
        on_canary_decision=admin.canary_decided,
        score_responses=settings.score_responses,
        telemetry=telemetry,
    )
    chat_service = ChatService(backend, recorder, tone, canary, telemetry=telemetry)
    return AppState(
        settings=settings,
        metrics=metrics,
        backend=backend,
        chat=chat_service,
        responses=ResponsesService(chat_service),
        control=control,
        admin=admin,
        tone=tone,
        recorder=recorder,
        history=history,
        adapters=adapter_service,
        store=store,
        spill=spill,
        base_name=base_name,
        started_at=started_at,
        startup_notes=notes,
        platform=platform,
        telemetry=telemetry,
    )


def seed_document(settings: Settings) -> dict:
    """What this replica would serve on its own: the local manifest (embedded) and the configured default. The
    first replica of a deployment writes it to the store; later ones adopt the store's document instead."""
    if settings.gateway:
        return {"personas": {}, "adapters": {}, "default": settings.default_adapter}
    adapters, default = read_manifest(settings.adapter_root)
    return {"personas": {}, "adapters": adapters, "default": settings.default_adapter or default}


async def close_state(state: AppState) -> None:
    await state.control.stop()
    await state.recorder.drain()
    await state.history.stop()
    await state.backend.close()
    state.tone.scorer.close()
    await state.spill.stop()
    await state.store.close()
    await state.telemetry.shutdown()


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = await build_state(settings)
        app.state.tw = state
        try:
            yield
        finally:
            app.state.tw = None
            await close_state(state)

    app = FastAPI(
        title="Tonewatch",
        version="0.2.0",
        lifespan=lifespan,
        description="Tone-consistency evaluation for LLM chatbots: an OpenAI-compatible server that "
        "scores the tone of every response and tracks per-session drift.",
    )
    app.state.tw = None
    install_error_handlers(app)
    for module in (health, chat, completions, score, personas, sessions, adapters, console):
        app.include_router(module.router)
    app.add_middleware(
        ServiceMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics_provider=lambda: app.state.tw.metrics if app.state.tw else None,
        replica=settings.replica_name,
    )
    if enabled_by_env(os.environ):  # outermost: the server span covers the body read and the 413s too
        app.add_middleware(
            TracingMiddleware, telemetry_provider=lambda: app.state.tw.telemetry if app.state.tw else None
        )
    install_openapi(app, settings)
    return app
