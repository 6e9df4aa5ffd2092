"""Admin API for adapters, plus vLLM's runtime LoRA endpoints (same auth) so vLLM tooling works unchanged."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.auth import AdminDep
from app.api.body import JsonRoute
from app.api.deps import AdaptersDep, AdminServiceDep
from app.api.errors import error_responses
from app.schemas.adapters import AdapterListing, AdapterPublic, CanaryRequest, LoadAdapter, VllmLoad, VllmUnload

router = APIRouter(route_class=JsonRoute)
ADMIN_ERRORS = error_responses(400, 401, 403, 404, 409, 501, 503)


@router.get("/admin/adapters", response_model=AdapterListing, responses=ADMIN_ERRORS)
async def list_adapters(_: AdminDep, adapters: AdaptersDep) -> dict[str, Any]:
    return await adapters.listing()


@router.post("/admin/adapters", response_model=AdapterPublic, responses=ADMIN_ERRORS)
async def load_adapter(body: LoadAdapter, _: AdminDep, admin: AdminServiceDep) -> dict[str, Any]:
    return await admin.load_adapter(body.name, body.path, activate=body.activate)


@router.post("/admin/adapters/{name}/activate", response_model=AdapterListing, responses=ADMIN_ERRORS)
async def activate_adapter(name: str, _: AdminDep, admin: AdminServiceDep) -> dict[str, Any]:
    return await admin.activate(name)


@router.delete("/admin/adapters/{name}", responses=ADMIN_ERRORS)
async def unload_adapter(name: str, _: AdminDep, admin: AdminServiceDep) -> dict[str, Any]:
    await admin.unload(name)
    return {"unloaded": name}


@router.get("/admin/adapters/{name}/profile", responses=ADMIN_ERRORS)
async def adapter_profile(name: str, _: AdminDep, adapters: AdaptersDep) -> dict[str, Any]:
    return await adapters.profile(name)


@router.post("/admin/adapters/{name}/canary", responses=ADMIN_ERRORS)
async def start_canary(name: str, body: CanaryRequest, _: AdminDep, admin: AdminServiceDep) -> dict[str, Any]:
    """Serve `share` of new sessions with this adapter and compare its tone with the current default's."""
    return await admin.start_canary(name, body)


@router.get("/admin/adapters/{name}/canary", responses=ADMIN_ERRORS)
async def canary_status(name: str, _: AdminDep, admin: AdminServiceDep) -> dict[str, Any]:
    return await admin.canary_status(name)


@router.delete("/admin/adapters/{name}/canary", responses=ADMIN_ERRORS)
async def stop_canary(name: str, _: AdminDep, admin: AdminServiceDep) -> dict[str, Any]:
    return await admin.stop_canary(name)


@router.post("/v1/load_lora_adapter", responses=ADMIN_ERRORS)
async def vllm_load(body: VllmLoad, _: AdminDep, admin: AdminServiceDep) -> dict[str, str]:
    await admin.load_adapter(body.lora_name, body.lora_path)
    return {"message": f"Success: LoRA adapter '{body.lora_name}' added successfully."}


@router.post("/v1/unload_lora_adapter", responses=ADMIN_ERRORS)
async def vllm_unload(body: VllmUnload, _: AdminDep, admin: AdminServiceDep) -> dict[str, str]:
    await admin.unload(body.lora_name)
    return {"message": f"Success: LoRA adapter '{body.lora_name}' removed successfully."}
