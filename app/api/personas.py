"""Admin CRUD for personas."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from app.api.auth import AdminDep
from app.api.body import JsonRoute
from app.api.deps import AdminServiceDep, ToneDep
from app.api.errors import error_responses
from app.schemas.score import PERSONA_NAME, PersonaBody, PersonaList, PersonaPublic

router = APIRouter(prefix="/admin/personas", route_class=JsonRoute)
NameParam = Path(pattern=PERSONA_NAME)


@router.get("", response_model=PersonaList, responses=error_responses(401, 403))
async def list_personas(_: AdminDep, tone: ToneDep) -> dict[str, Any]:
    return {"data": [p.public() for p in tone.list_personas()]}


@router.get("/{name}", response_model=PersonaPublic, responses=error_responses(401, 403, 404))
async def get_persona(name: str, _: AdminDep, tone: ToneDep) -> dict[str, Any]:
    persona = tone.persona(name)
    assert persona is not None
    return persona.public()


@router.put("/{name}", response_model=PersonaPublic, responses=error_responses(400, 401, 403, 409, 503))
async def put_persona(body: PersonaBody, _: AdminDep, admin: AdminServiceDep, name: str = NameParam) -> dict[str, Any]:
    persona = await admin.put_persona(name, body)
    return persona.public()


@router.delete("/{name}", responses=error_responses(401, 403, 404, 409, 503))
async def delete_persona(name: str, _: AdminDep, admin: AdminServiceDep) -> dict[str, Any]:
    await admin.delete_persona(name)
    return {"deleted": name}
