"""The shared control plane: API-defined personas, the adapter manifest (name -> path) and the default adapter, kept
as one versioned document in the store, so that several replicas behind a load balancer behave as one service.

Writes (admin API, any replica): validate and apply locally first (a bad persona or adapter fails with a 4xx and
changes nothing), then a compare-and-set of the document on its version; a lost race re-reads and re-applies the
change on top of the winner's, so concurrent writes never leave replicas disagreeing (no split brain on the
default). Reads (every replica): a change feed (Redis pub/sub) plus polling every `poll_s` as the fallback; each
replica applies the document's difference to what it holds and reports the version it applied (`/readyz`,
`tonewatch_control_version`). A replica that cannot apply part of the document (an adapter whose files it cannot
read) records why and keeps serving the rest.

At start-up the first replica seeds an empty document from its local manifest; later ones adopt the document. In
gateway mode the upstream owns adapters: only personas and routing (the default model) are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from app.metrics import Metrics
from app.store.base import ControlStore, StoreUnavailable, VersionConflict

log = logging.getLogger("tonewatch.control")
CAS_RETRIES = 20


class Applier(Protocol):
    """What a replica does with the document: bring its personas / adapters / default in line with it."""

    async def apply_personas(self, personas: dict[str, dict]) -> dict[str, str]: ...  # name -> error
    async def apply_adapters(self, adapters: dict[str, str], default: str | None) -> dict[str, str]: ...
    def apply_canary(self, canary: dict | None) -> None: ...


def empty_doc() -> dict[str, Any]:
    return {"personas": {}, "adapters": {}, "default": None, "canary": None}


class ControlPlane:
    def __init__(self, store: ControlStore, applier: Applier, metrics: Metrics, *, poll_s: float = 1.0):
        self.store = store
        self.applier = applier
        self.metrics = metrics
        self.poll_s = poll_s
        self.version = 0  # the version this replica has applied
        self.doc: dict[str, Any] = empty_doc()
        self.errors: dict[str, str] = {}  # what this replica could not apply, by "kind:name"
        self.applied_at = 0.0
        self._lock = asyncio.Lock()  # one apply or admin write at a time on this replica
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()

    # ---- lifecycle ------------------------------------------------------------------------------------------
    async def start(self, seed: dict[str, Any]) -> None:
        """Adopt the store's document, or seed it with this replica's local view when there is none yet."""
        try:
            version, doc = await self.store.get_control()
            if version == 0:
                with contextlib.suppress(VersionConflict):  # another replica seeded it first: adopt theirs
                    await self.store.cas_control(0, _normalized(seed))
                version, doc = await self.store.get_control()
            await self._apply(version, doc)
        except StoreUnavailable as exc:
            log.warning("control plane: store unavailable at start-up (%s); serving the local manifest", exc)
            await self._apply(0, _normalized(seed))
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._poll_loop(), name="control-poll"),
            loop.create_task(self._watch_loop(), name="control-watch"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    # ---- the read side ---------------------------------------------------------------------------------------
    async def _watch_loop(self) -> None:
        while True:
            feed = self.store.watch_control()
            if feed is None:
                return  # no change feed (SQLite): polling alone
            try:
                async for _version in feed:
                    self._wake.set()
            except Exception as exc:  # the connection broke: polling covers until it is back
                log.debug("control feed interrupted: %r", exc)
            await asyncio.sleep(self.poll_s)

    async def _poll_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()
            try:
                await self.refresh()
            except StoreUnavailable:
                pass
            except Exception:  # never let the loop die: the replica would stop converging
                log.exception("control plane refresh failed")

    async def refresh(self) -> None:
        version, doc = await self.store.get_control()
        if version > self.version:
            async with self._lock:
                if version > self.version:
                    await self._apply(version, doc)

    async def _apply(self, version: int, doc: dict[str, Any]) -> None:
        doc = _normalized(doc)
        errors: dict[str, str] = {}
        for name, error in (await self.applier.apply_personas(doc["personas"])).items():
            errors[f"persona:{name}"] = error
        for name, error in (await self.applier.apply_adapters(doc["adapters"], doc["default"])).items():
            errors[f"adapter:{name}"] = error
        self.applier.apply_canary(doc["canary"])
        for key in set(errors) - set(self.errors):
            log.error("this replica cannot apply %s: %s", key, errors[key])
            self.metrics.control_apply_errors.labels(key.split(":", 1)[0]).inc()
        self.version, self.doc, self.errors, self.applied_at = version, doc, errors, time.time()
        self.metrics.control_version.set(version)

    # ---- the write side ---------------------------------------------------------------------------------------
    async def update(self, change: Callable[[dict[str, Any]], None]) -> int:
        """Apply `change` (which edits a copy of the document in place) with compare-and-set; returns the new
        version. The caller has already applied the change locally; a lost race re-applies it on the winner's."""
        async with self._lock:
            for _ in range(CAS_RETRIES):
                version, doc = await self.store.get_control()
                doc = _normalized(copy.deepcopy(doc))
                change(doc)
                try:
                    new = await self.store.cas_control(version, doc)
                except VersionConflict:
                    continue
                await self._apply(new, doc)  # also picks up whatever the winner of a race changed
                return new
        raise StoreUnavailable(f"control document still contended after {CAS_RETRIES} attempts")

    def status(self) -> dict[str, Any]:
        return {"version": self.version, "errors": dict(self.errors), "applied_at": self.applied_at}


def _normalized(doc: dict[str, Any] | None) -> dict[str, Any]:
    out = empty_doc()
    if isinstance(doc, dict):
        out["personas"] = dict(doc.get("personas") or {})
        out["adapters"] = dict(doc.get("adapters") or {})
        out["default"] = doc.get("default")
        out["canary"] = doc.get("canary")
    return out
