"""Adapter registry: validate -> install on the engine worker -> route requests by name -> unload when idle.

Every change of the model happens on the engine's worker thread (Engine.call), between decode steps, so no
forward pass ever sees a half-installed adapter. A failed load is rolled back (PEFT can leave half-registered
adapters behind), leaving the registry, the active adapter and the model exactly as before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine.adapter_convert import convert_to_lora
from app.engine.adapter_files import AdapterSpec, inspect_adapter
from app.engine.adapter_paths import AdapterFolderMissing, InvalidAdapterError, validate_name
from app.engine.profile import profile_adapter
from app.engine.worker import Engine
from app.errors import Conflict, InvalidAdapter, ModelNotFound, NotFound
from app.metrics import Metrics

log = logging.getLogger("tonewatch.adapters")
DEFAULT_ALIAS = "default"
BASE_LABEL = "base"  # the metric label of requests served by the plain base weights
# PEFT can hold several adapters of one tuner type in one model; LoRA (with DoRA and per-module ranks) is the
# type the live model holds. Other types are served as their exact LoRA equivalent (adapter_convert).
SERVED_PEFT_TYPES = {"LORA"}


@dataclass
class AdapterRecord:
    spec: AdapterSpec
    loaded_at: float
    requests_served: int = 0
    unloading: bool = False
    profile: dict | None = None
    trainable_params: int = 0
    conversion: dict = field(default_factory=dict)  # how a non-LoRA adapter is served (as an exact LoRA)

    def public(self, active: bool) -> dict[str, Any]:
        s = self.spec
        return {
            "name": s.name,
            "type": s.kind,
            "peft_type": s.peft_type,
            "rank": s.rank,
            "alpha": s.alpha,
            "target_modules": s.target_modules,
            "trainable_params": self.trainable_params,
            "size_bytes": s.size_bytes,
            "path": str(s.path),
            "loaded_at": self.loaded_at,
            "requests_served": self.requests_served,
            "mixable": s.mixable or bool(self.conversion),
            "active": active,
            **self.conversion,
        }


@dataclass
class Target:
    """What serves a request: the public model name and the adapter (None = base weights)."""

    model: str
    adapter: str | None


@dataclass
class AdapterRegistry:
    engine: Engine
    metrics: Metrics
    root: Path
    base_name: str
    max_rank: int = 64
    max_bytes: int = 64 * 2**20
    unload_timeout_s: float = 30.0
    # Validation, SVD conversion and profiles read the model but never change it: they run on this one admin
    # thread (under the model lock, so no load/unload happens meanwhile), never on the decode worker.
    admin_pool: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tonewatch-admin"
        )
    )
    adapters: dict[str, AdapterRecord] = field(default_factory=dict)
    active: str | None = None  # None: requests naming no model get the base weights
    _name_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _model_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._name_locks.setdefault(name, asyncio.Lock())

    async def _admin(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.admin_pool, fn, *args)

    def close(self) -> None:
        self.admin_pool.shutdown(wait=False, cancel_futures=True)

    # ---- routing ----------------------------------------------------------------------------------------------
    def resolve(self, model: str | None) -> Target:
        if model in (None, "", DEFAULT_ALIAS):
            active = self.active  # read once: a concurrent swap affects only later requests
            return Target(active or self.base_name, active)
        if model == self.base_name:
            return Target(self.base_name, None)
        record = self.adapters.get(model)
        if record is None or record.unloading:
            raise ModelNotFound(f"model {model!r} does not exist; GET /v1/models lists what is served", param="model")
        return Target(model, model)

    def names(self) -> list[str]:
        return [name for name, record in self.adapters.items() if not record.unloading]

    def count_served(self, adapter: str | None) -> None:
        """Counts completed requests per adapter (for GET /admin/adapters)."""
        if adapter and adapter in self.adapters:
            self.adapters[adapter].requests_served += 1

    # ---- load -------------------------------------------------------------------------------------------------
    async def load(self, name: str, path: str, activate: bool = False) -> AdapterRecord:
        try:
            validate_name(name)
        except InvalidAdapterError as exc:
            raise InvalidAdapter(str(exc), param="name") from exc
        if name in (self.base_name, DEFAULT_ALIAS, BASE_LABEL):
            raise Conflict(
                f"{name!r} is reserved (the base model, the active-adapter alias, or the base model's metric label)",
                param="name",
            )
        started = time.perf_counter()
        async with self._lock(name):
            if name in self.adapters:
                raise Conflict(f"adapter {name!r} is already loaded; unload it first to replace it", param="name")
            try:
                async with self._model_lock:
                    spec = await self._admin(
                        inspect_adapter, self.root, path, name, self.engine.model, self.max_rank, self.max_bytes
                    )
                    with tempfile.TemporaryDirectory(prefix="tonewatch-convert-") as tmp:
                        served, conversion = spec, {}
                        if spec.peft_type not in SERVED_PEFT_TYPES:
                            served, conversion = await self._admin(
                                convert_to_lora, spec, self.engine.model, Path(tmp), self.max_rank
                            )
                        trainable = await asyncio.wrap_future(self.engine.install_adapter(served))
            except InvalidAdapterError as exc:
                self.metrics.adapter_loads.labels(name, "error").inc()
                if isinstance(exc, AdapterFolderMissing):
                    raise NotFound(str(exc), param="path") from exc
                raise InvalidAdapter(str(exc), param="path") from exc
            except Exception:
                self.metrics.adapter_loads.labels(name, "error").inc()
                raise
            record = AdapterRecord(spec, loaded_at=time.time(), trainable_params=trainable, conversion=conversion)
            self.adapters[name] = record
        self.metrics.adapter_loads.labels(name, "ok").inc()
        self.metrics.adapter_load_seconds.observe(time.perf_counter() - started)
        self.metrics.adapters_loaded.set(len(self.adapters))
        self._export_active()
        log.info("loaded adapter %s (%s r=%s) from %s", name, spec.kind, spec.rank, spec.path)
        if activate:
            await self.activate(name)
        return record

    # ---- activate / unload ----------------------------------------------------------------------------------
    async def activate(self, name: str | None) -> None:
        """Atomic swap of the default: a single assignment; resolved requests keep the adapter they got."""
        if name is not None and (name not in self.adapters or self.adapters[name].unloading):
            raise NotFound(f"adapter {name!r} is not loaded", param="name")
        async with self._lock(name or self.base_name):
            previous, self.active = self.active, name
        if previous != name:
            self.metrics.adapter_swaps.inc()
        self._export_active()
        log.info("active adapter: %s -> %s", previous or "base", name or "base")

    def _export_active(self) -> None:
        # "base" stands for the plain base weights, so exactly one series is 1 at any time
        for adapter in [*self.adapters, "base"]:
            self.metrics.active_adapter.labels(adapter).set(1 if adapter == (self.active or "base") else 0)

    async def unload(self, name: str) -> None:
        async with self._lock(name):
            record = self.adapters.get(name)
            if record is None:
                raise NotFound(f"adapter {name!r} is not loaded", param="name")
            if self.active == name:
                raise Conflict(f"adapter {name!r} is the active default; activate another (or the base) first")
            record.unloading = True  # new requests for it now get 404
            deadline = time.monotonic() + self.unload_timeout_s
            while self.engine.rows_for_adapter(name) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.engine.rows_for_adapter(name):
                record.unloading = False
                raise Conflict(f"adapter {name!r} still has requests in flight after {self.unload_timeout_s:.0f}s")
            async with self._model_lock:
                await asyncio.wrap_future(self.engine.remove_adapter(name))
            del self.adapters[name]
        self.metrics.adapters_loaded.set(len(self.adapters))
        self.metrics.active_adapter.remove(name)
        log.info("unloaded adapter %s", name)

    # ---- profile ----------------------------------------------------------------------------------------------
    async def profile(self, name: str) -> dict:
        record = self.adapters.get(name)
        if record is None:
            raise NotFound(f"adapter {name!r} is not loaded", param="name")
        if record.profile is None:  # ΔW never changes for a loaded adapter: compute once
            async with self._lock(name), self._model_lock:
                if name not in self.adapters:
                    raise NotFound(f"adapter {name!r} is not loaded", param="name")
                record.profile = await self._admin(profile_adapter, self.engine.model, name)
        return record.profile

    # ---- start-up -------------------------------------------------------------------------------------------
    async def load_startup(self, default: str | None = None) -> list[str]:
        """Load the local manifest (or every adapter folder) directly; skip broken ones. Used where no control
        plane shares a manifest (the eval and study tools); the server seeds its control plane from read_manifest."""
        errors: list[str] = []
        self._export_active()
        entries, manifest_default = read_manifest(self.root)
        default = default or manifest_default
        for name, path in entries.items():
            try:
                await self.load(name, path)
            except Exception as exc:  # a broken adapter is reported, not fatal
                message = getattr(exc, "message", str(exc))
                log.error("skipping adapter %s: %s", name, message)
                errors.append(f"{name}: {message}")
        if default and default in self.adapters:
            await self.activate(default)
        elif default:
            errors.append(f"default adapter {default!r} is not loaded")
        return errors


def read_manifest(root: Path) -> tuple[dict[str, str], str | None]:
    """The adapters an adapter root ships: its manifest.json (name -> path, default), else every adapter folder."""
    manifest = Path(root) / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        return {e["name"]: e["path"] for e in data.get("adapters", [])}, data.get("default")
    if Path(root).is_dir():
        found = sorted(p for p in Path(root).iterdir() if (p / "adapter_config.json").is_file())
        return {p.name: p.name for p in found}, None
    return {}, None
