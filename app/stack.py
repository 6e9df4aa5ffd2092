"""The serving stack of the embedded engine, built from Settings in one place: the base model as configured
(dtype, attention, quantization, output head), its worker Engine (threads, prefix cache, batching) and the adapter
registry. The server (app.main) and `tonewatch eval` (app.evaluation.report) both call `build_model_stack`, so the
evaluation measures the stack the server runs. The CPU-specific choices made on the way, each measured at start-up,
are recorded in the PlatformReport passed in."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import Settings
from app.engine import head, quantize
from app.engine.adapters import AdapterRegistry
from app.engine.cpu import PlatformReport
from app.engine.provision import ModelSource, load_base_model, pick_device, resolve_base_model
from app.engine.worker import Engine
from app.metrics import Metrics
from app.scoring.scorer import ToneScorer

log = logging.getLogger("tonewatch")


@dataclass
class ModelStack:
    source: ModelSource
    device: str
    tokenizer: Any
    engine: Engine
    registry: AdapterRegistry


async def build_model_stack(
    settings: Settings,
    metrics: Metrics,
    platform: PlatformReport,
    *,
    adapter_root: Path | None = None,
    max_batch_size: int | None = None,
    max_queue: int | None = None,
    request_timeout_s: float | None = None,
) -> ModelStack:
    """Load, adapt to this CPU and start the engine; the keyword overrides serve offline runs (an evaluation queues
    everything at once and waits as long as it takes). The engine is started; stop it with `engine.stop()`."""
    source = resolve_base_model(settings.base_model, settings.served_model_name)
    device = platform.device

    def load() -> tuple[Any, Any]:
        model, tokenizer = load_base_model(source, settings.model_cache_dir, device, settings.dtype, settings.attention)
        model = quantize.apply(model, settings.quantize, device, platform.choices)
        return head.apply(model, device, settings.reorder_head, platform.choices), tokenizer

    model, tokenizer = await asyncio.to_thread(load)
    engine = Engine(
        model,
        tokenizer,
        device=device,
        metrics=metrics,
        max_batch_size=max_batch_size or settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_queue=max_queue or settings.max_queue,
        request_timeout_s=request_timeout_s or settings.request_timeout_s,
        threads=settings.engine_threads,
        prefix_cache_mb=settings.prefix_cache_mb,
    )
    await asyncio.to_thread(engine.start)  # it times a few decode steps before it is ready
    platform.choices.update(engine.choices)
    registry = AdapterRegistry(
        engine,
        metrics,
        adapter_root or settings.adapter_root,
        source.name,
        max_rank=settings.max_adapter_rank,
        max_bytes=int(settings.max_adapter_mb * 2**20),
        unload_timeout_s=settings.adapter_unload_timeout_s,
    )
    log.info("serving %s on %s (quantize=%s)", source.name, device, settings.quantize)
    return ModelStack(source, device, tokenizer, engine, registry)


def platform_for(settings: Settings) -> PlatformReport:
    """The CPU this process runs on and the device the engine will use (the CPU in gateway mode)."""
    return PlatformReport.detect("cpu" if settings.gateway else pick_device(settings.device))


async def load_scorer(settings: Settings, metrics: Metrics, platform: PlatformReport) -> ToneScorer:
    """The tone scorer on TONEWATCH_SCORER_DEVICE (auto: where the engine runs)."""
    device = platform.device if settings.scorer_device == "auto" else pick_device(settings.scorer_device)
    scorer = await asyncio.to_thread(
        ToneScorer.load,
        metrics,
        settings.style_dir,
        settings.persona_dir,
        device=device,
        threads=settings.scorer_threads,
    )
    platform.choices["scorer_device"] = device
    return scorer
