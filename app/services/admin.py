"""Admin writes (personas, adapters, the default) as one replica of many performs them: validate and apply locally,
share through the control plane, and roll the local change back if it cannot be shared, so a failed admin action
leaves the service exactly as before — on this replica and on all the others."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.errors import StoreDown
from app.schemas.score import PersonaBody
from app.scoring.personas import Persona
from app.services.adapters import AdapterService
from app.services.control import ControlPlane
from app.services.tone import ToneService
from app.store.base import StoreUnavailable

UNSHARED = "the shared control plane (the session store) is unavailable; nothing was changed, retry later"


class ReplicaApplier:
    """How this replica applies the shared document: personas to the scorer, adapters and default to the
    adapter service (behind an upstream only the default is applied: the upstream owns its adapters)."""

    def __init__(self, tone: ToneService, adapters: AdapterService):
        self.tone = tone
        self.adapters = adapters

    async def apply_personas(self, personas: dict[str, dict]) -> dict[str, str]:
        return await self.tone.sync_personas(personas)

    async def apply_adapters(self, adapters: dict[str, str], default: str | None) -> dict[str, str]:
        return await self.adapters.sync(adapters if self.adapters.shares_adapters else {}, default)


class AdminService:
    def __init__(self, control: ControlPlane, tone: ToneService, adapters: AdapterService):
        self.control = control
        self.tone = tone
        self.adapters = adapters

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
