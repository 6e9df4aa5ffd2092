"""Admin writes (personas, adapters, the default) as one replica of many performs them: validate and apply locally,
share through the control plane, and roll the local change back if it cannot be shared, so a failed admin action
leaves the service exactly as before — on this replica and on all the others."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from app.errors import Conflict, NotFound, StoreDown
from app.metrics import Metrics
from app.schemas.adapters import CanaryRequest
from app.schemas.score import PersonaBody
from app.scoring.personas import Persona
from app.services.adapters import AdapterService
from app.services.canary import CanaryService
from app.services.control import ControlPlane
from app.services.tone import ToneService
from app.store.base import StoreUnavailable

UNSHARED = "the shared control plane (the session store) is unavailable; nothing was changed, retry later"


class ReplicaApplier:
    """How this replica applies the shared document: personas to the scorer, adapters and default to the
    adapter service (behind an upstream only the default is applied: the upstream owns its adapters), the canary
    configuration to the canary service."""

    def __init__(self, tone: ToneService, adapters: AdapterService, canary: CanaryService):
        self.tone = tone
        self.adapters = adapters
        self.canary = canary

    def apply_canary(self, canary: dict | None) -> None:
        self.canary.apply(canary)

    async def apply_personas(self, personas: dict[str, dict]) -> dict[str, str]:
        return await self.tone.sync_personas(personas)

    async def apply_adapters(self, adapters: dict[str, str], default: str | None) -> dict[str, str]:
        return await self.adapters.sync(adapters if self.adapters.shares_adapters else {}, default)


class AdminService:
    def __init__(
        self,
        control: ControlPlane,
        tone: ToneService,
        adapters: AdapterService,
        canary: CanaryService,
        metrics: Metrics,
    ):
        self.control = control
        self.tone = tone
        self.adapters = adapters
        self.canary = canary
        self.metrics = metrics

    async def _share(self, change: Callable[[dict[str, Any]], None]) -> int:
        try:
            return await self.control.update(change)
        except StoreUnavailable as exc:
            raise StoreDown(UNSHARED) from exc

    # ---- personas -------------------------------------------------------------------------------------------
    async def put_persona(self, name: str, body: PersonaBody) -> Persona:
        persona = await self.tone.build_persona(name, body)
        definition = {k: v for k, v in persona.definition().items() if k != "name"}
        self.tone.install_persona(persona)  # before sharing, so applying our own version is a no-op here
        try:
            await self._share(lambda doc: doc["personas"].__setitem__(name, definition))
        except StoreDown:
            self.tone.remove_persona(name)
            raise
        return persona

    async def delete_persona(self, name: str) -> None:
        persona = self.tone.removable_persona(name)
        self.tone.remove_persona(name)
        try:
            await self._share(lambda doc: doc["personas"].pop(name, None))
        except StoreDown:
            self.tone.install_persona(persona)
            raise

    # ---- adapters -------------------------------------------------------------------------------------------
    async def load_adapter(self, name: str, path: str, activate: bool = False) -> dict[str, Any]:
        record = await self.adapters.load(name, path)
        if self.adapters.shares_adapters:
            relative = self.adapters.relative_path(name) or path
            try:
                await self._share(lambda doc: doc["adapters"].__setitem__(name, relative))
            except StoreDown:
                await self.adapters.unload(name)
                raise
        if activate:
            await self.activate(name)
            record["active"] = True
        return record

    async def activate(self, name: str) -> dict[str, Any]:
        previous = self.adapters.active()
        listing = await self.adapters.activate(name)
        chosen = self.adapters.active()
        try:
            await self._share(lambda doc: doc.__setitem__("default", chosen))
        except StoreDown:
            await self.adapters.activate(previous or listing["base"])
            raise
        return await self.adapters.listing()

    async def unload(self, name: str) -> None:
        path = self.adapters.relative_path(name)
        await self.adapters.unload(name)
        if not self.adapters.shares_adapters:
            return
        try:
            await self._share(lambda doc: doc["adapters"].pop(name, None))
        except StoreDown:
            if path is not None:
                await self.adapters.load(name, path)
            raise

    # ---- canary rollouts --------------------------------------------------------------------------------------
    async def start_canary(self, name: str, body: CanaryRequest) -> dict[str, Any]:
        listing = await self.adapters.listing()
        served = {a["name"] for a in listing["data"]} | {listing["base"]}
        if name not in served:
            raise NotFound(f"adapter {name!r} is not loaded", param="name")
        self.tone.persona(body.persona)  # NotFound for an unknown persona
        current = self.adapters.active()
        if name == (current or listing["base"]):
            raise Conflict(f"{name!r} is already the default: a canary is compared against the current default")
        running = self.canary.config if self.canary.running else None
        if running is not None:
            raise Conflict(f"a canary of {running.adapter!r} is running; DELETE it first")
        config = asdict(self.canary.new_config(name, current, body.persona, body))
        await self._share(lambda doc: doc.__setitem__("canary", config))
        return await self.canary.status()

    async def canary_status(self, name: str) -> dict[str, Any]:
        config = self.canary.config
        if config is None or config.adapter != name:
            raise NotFound(f"no canary of adapter {name!r}", param="name")
        return await self.canary.status()

    async def stop_canary(self, name: str) -> dict[str, Any]:
        config = self.canary.config
        if config is None or config.adapter != name:
            raise NotFound(f"no canary of adapter {name!r}", param="name")
        await self._finish_canary(config.id, "stopped", "stopped by the operator")
        return await self.canary.status()

    async def canary_decided(self, decision: str) -> None:
        """The sequential test decided (on whichever replica saw the deciding turn): act on it, once."""
        config = self.canary.config
        if config is None or config.status != "running":
            return
        if decision == "rolled_back":
            await self._finish_canary(config.id, "rolled_back", "the canary's tone is worse than the current one's")
        elif decision == "passed" and config.auto_promote:
            await self._finish_canary(config.id, "promoted", "passed, promoted as asked")
            await self.activate(config.adapter)
        elif decision == "passed":
            await self._finish_canary(config.id, "passed", "no regression; promote it by activating it")

    async def _finish_canary(self, canary_id: str, status: str, reason: str) -> None:
        def change(doc: dict[str, Any]) -> None:
            canary = doc.get("canary")
            if canary and canary["id"] == canary_id and canary["status"] == "running":
                doc["canary"] = {**canary, "status": status, "decided_at": time.time(), "reason": reason}

        await self._share(change)
        self.metrics.canary_decisions.labels(status).inc()
