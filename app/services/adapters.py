"""Adapter administration as the admin API sees it, whatever the backend.

Embedded: the adapter registry (validate -> install on the worker -> route). Behind an upstream, adapters live in
the upstream: vLLM's runtime LoRA endpoints after our own validation, or 501 for engines without them.
"""

from __future__ import annotations

from typing import Any, Protocol

from app.engine.adapters import AdapterRegistry


class AdapterService(Protocol):
    async def listing(self) -> dict[str, Any]: ...
    async def load(self, name: str, path: str, activate: bool = False) -> dict[str, Any]: ...
    async def activate(self, name: str) -> dict[str, Any]: ...
    async def unload(self, name: str) -> None: ...
    async def profile(self, name: str) -> dict[str, Any]: ...


class EmbeddedAdapters:
    def __init__(self, registry: AdapterRegistry):
        self.registry = registry

    async def listing(self) -> dict[str, Any]:
        registry = self.registry
        data = [r.public(active=(name == registry.active)) for name, r in registry.adapters.items()]
        return {"active": registry.active or registry.base_name, "base": registry.base_name, "data": data}

    async def load(self, name: str, path: str, activate: bool = False) -> dict[str, Any]:
        record = await self.registry.load(name, path, activate=activate)
        return record.public(active=self.registry.active == name)

    async def activate(self, name: str) -> dict[str, Any]:
        await self.registry.activate(None if name == self.registry.base_name else name)
        return await self.listing()

    async def unload(self, name: str) -> None:
        await self.registry.unload(name)

    async def profile(self, name: str) -> dict[str, Any]:
        return await self.registry.profile(name)
