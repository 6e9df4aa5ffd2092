"""Admin API for adapters, plus vLLM's runtime LoRA endpoints (same auth) so vLLM tooling works unchanged."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.auth import AdminDep
from app.api.deps import StateDep
from app.schemas.adapters import LoadAdapter, VllmLoad, VllmUnload

router = APIRouter()


def _listing(state) -> dict:
    registry = state.adapters
    data = [r.public(active=(name == registry.active)) for name, r in registry.adapters.items()]
    return {"active": registry.active or registry.base_name, "base": registry.base_name, "data": data}


@router.get("/admin/adapters")
async def list_adapters(_: AdminDep, state: StateDep) -> dict:
    return _listing(state)


@router.post("/admin/adapters")
async def load_adapter(body: LoadAdapter, _: AdminDep, state: StateDep) -> dict:
    record = await state.adapters.load(body.name, body.path, activate=body.activate)
    return record.public(active=state.adapters.active == body.name)


@router.post("/admin/adapters/{name}/activate")
async def activate_adapter(name: str, _: AdminDep, state: StateDep) -> dict:
    await state.adapters.activate(None if name == state.adapters.base_name else name)
    return _listing(state)


@router.delete("/admin/adapters/{name}")
async def unload_adapter(name: str, _: AdminDep, state: StateDep) -> dict:
    await state.adapters.unload(name)
    return {"unloaded": name}


@router.get("/admin/adapters/{name}/profile")
async def adapter_profile(name: str, _: AdminDep, state: StateDep) -> dict:
    return await state.adapters.profile(name)


@router.post("/v1/load_lora_adapter")
async def vllm_load(body: VllmLoad, _: AdminDep, state: StateDep) -> dict:
    await state.adapters.load(body.lora_name, body.lora_path)
    return {"message": f"Success: LoRA adapter '{body.lora_name}' added successfully."}


@router.post("/v1/unload_lora_adapter")
async def vllm_unload(body: VllmUnload, _: AdminDep, state: StateDep) -> dict:
    await state.adapters.unload(body.lora_name)
    return {"message": f"Success: LoRA adapter '{body.lora_name}' removed successfully."}
