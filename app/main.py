"""create_app(settings): the app factory. The lifespan builds engine, scorer and stores; nothing at import time."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import adapters, chat, health, personas, score, sessions
from app.api.middleware import BodyLimitAndMetrics
from app.config import Settings
from app.engine.adapters import AdapterRegistry
from app.engine.provision import load_base_model, pick_device, resolve_base_model
from app.engine.worker import Engine
from app.errors import install_error_handlers
from app.metrics import Metrics
from app.scoring.scorer import ToneScorer
from app.services.chat import ChatService
from app.services.history import HistoryService
from app.services.tone import ToneService
from app.state import AppState
from app.store.base import StoreUnavailable, open_store
from app.store.spill import ResilientHistory

log = logging.getLogger("tonewatch")


async def build_state(settings: Settings) -> AppState:
    metrics = Metrics()
    source = resolve_base_model(settings.base_model, settings.served_model_name)
    device = pick_device(settings.device)
    model, tokenizer = await asyncio.to_thread(
        load_base_model, source, settings.model_cache_dir, device, settings.dtype
    )
    engine = Engine(
        model, tokenizer, device=device, metrics=metrics, max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms, max_queue=settings.max_queue, request_timeout_s=settings.request_timeout_s,
    )
    engine.start()
    chat_service = ChatService(settings, engine, tokenizer, source.name)
    registry = AdapterRegistry(engine, metrics, settings.adapter_root, source.name,
                               max_rank=settings.max_adapter_rank, max_bytes=int(settings.max_adapter_mb * 2**20),
                               unload_timeout_s=settings.adapter_unload_timeout_s)
    chat_service.resolve_target = registry.resolve
    chat_service.list_adapters = registry.names
    chat_service.finishers.append(registry.count_served)
    startup_errors = await registry.load_startup(settings.default_adapter)
    scorer = await asyncio.to_thread(ToneScorer.load, metrics)
    store = open_store(settings.redis_url, settings.db_path, max_turns=settings.history_max_turns,
                       ttl_s=settings.history_ttl_s)
    spill = ResilientHistory(store, settings.spill_path or settings.db_path.with_suffix(".spill.jsonl"),
                             max_spill=settings.max_spill, metrics=metrics)
    await spill.start()
    history = await asyncio.to_thread(
        HistoryService, store, spill, metrics, prompt_chars=settings.history_prompt_chars,
        redact_text=settings.history_redact)
    tone = ToneService(scorer, store=store, default_persona=settings.default_persona, history=history)
    try:
        await tone.restore_personas()
    except StoreUnavailable:
        log.warning("store unavailable at start-up: API-defined personas not restored yet")
    if settings.score_responses:
        chat_service.finishers.append(tone.chat_finisher)
    log.info("serving %s on %s", source.name, device)
    state = AppState(settings=settings, metrics=metrics, engine=engine, chat=chat_service, tone=tone,
                     store=store, history=history, adapters=registry, base_name=source.name,
                     started_at=time.time())
    state.extras["adapter_startup_errors"] = startup_errors
    # a store outage degrades (history spills locally) but does not stop serving
    state.degraded_checks["store"] = _store_check(store, spill)
    return state


def _store_check(store, spill: ResilientHistory):
    async def check() -> str | None:
        await store.ping()
        if spill.spilled:
            return f"{spill.spilled} turns waiting in the local spill"
        return None

    return check


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = await build_state(settings)
        app.state.tw = state
        try:
            yield
        finally:
            app.state.tw = None
            await asyncio.to_thread(state.engine.stop)
            state.tone.scorer.close()
            await state.history.history.stop()
            await state.store.close()

    app = FastAPI(title="Tonewatch", version="0.1.0", lifespan=lifespan)
    app.state.tw = None
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(chat.router)
    app.include_router(score.router)
    app.include_router(personas.router)
    app.include_router(sessions.router)
    app.include_router(adapters.router)
    app.add_middleware(
        BodyLimitAndMetrics,
        max_body_bytes=settings.max_body_bytes,
        metrics_provider=lambda: app.state.tw.metrics if app.state.tw else None,
    )
    return app
