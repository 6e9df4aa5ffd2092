"""Admin CRUD for personas."""

from __future__ import annotations

from fastapi import APIRouter, Path

from app.api.auth import AdminDep
from app.api.deps import StateDep
from app.schemas.score import PERSONA_NAME, PersonaBody

router = APIRouter(prefix="/admin/personas")
NameParam = Path(pattern=PERSONA_NAME)


@router.get("")
async def list_personas(_: AdminDep, state: StateDep) -> dict:
    return {"data": [p.public() for p in state.tone.scorer.personas.values()]}


@router.get("/{name}")
async def get_persona(name: str, _: AdminDep, state: StateDep) -> dict:
    return state.tone.scorer.get_persona(name).public()


@router.put("/{name}")
async def put_persona(body: PersonaBody, _: AdminDep, state: StateDep, name: str = NameParam) -> dict:
    persona = await state.tone.put_persona(name, body)
    return persona.public()


@router.delete("/{name}")
async def delete_persona(name: str, _: AdminDep, state: StateDep) -> dict:
    await state.tone.delete_persona(name)
    return {"deleted": name}
