"""Tone flow: score texts (chat responses or posted ones), manage personas (validate -> calibrate -> persist ->
install, so a failure leaves everything as it was), and the bounded metric label of where a text came from."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from app.errors import Conflict, StoreDown
from app.schemas.score import PersonaBody, ScoreRequest
from app.scoring.personas import Persona
from app.scoring.scorer import ToneScorer
from app.services.history import HistoryService, TurnInput
from app.store.base import StoreUnavailable

log = logging.getLogger("tonewatch.tone")
EXTERNAL = "external"


class PersonaStore(Protocol):
    async def put_persona(self, name: str, data: dict) -> None: ...
    async def get_personas(self) -> dict[str, dict]: ...
    async def delete_persona(self, name: str) -> bool: ...


class ToneService:
    def __init__(
        self,
        scorer: ToneScorer,
        store: PersonaStore | None,
        *,
        default_persona: str | None = None,
        history: HistoryService | None = None,
        score_sources: list[str] | None = None,
        served_models: Callable[[], set[str]] = set,
    ):
        self.scorer = scorer
        self.store = store
        self.default_persona = default_persona
        self.history = history
        self.score_sources = set(score_sources or [])
        self.served_models = served_models  # names that may be metric labels: loaded adapters, base, upstream models

    # ---- labels ---------------------------------------------------------------------------------------------
    def source_label(self, source: str | None) -> str:
        """Metric label for a /v1/score caller's `adapter`: only bounded sets, never a client-chosen string."""
        if source and (source in self.score_sources or source in self.served_models()):
            return source
        return EXTERNAL

    # ---- personas -------------------------------------------------------------------------------------------
    async def restore_personas(self) -> None:
        """API-defined personas persist in the store; a broken one is logged and skipped, not fatal."""
        if self.store is None:
            return
        for name, data in (await self.store.get_personas()).items():
            try:
                persona = Persona(
                    name=name,
                    exemplars=data["exemplars"],
                    description=data.get("description", ""),
                    target=data.get("target") or {},
                    source="api",
                )
                self.scorer.personas[name] = await self.scorer.build_persona(persona)
            except Exception:
                log.exception("skipping stored persona %s", name)

    def persona_for(self, requested: str | None, adapter: str | None) -> str | None:
        if requested is not None:
            return requested
        if adapter is not None and adapter in self.scorer.personas:
            return adapter  # an adapter trained for a persona is judged against it
        return self.default_persona

    def persona(self, name: str | None) -> Persona | None:
        """The persona (NotFound for an unknown name), so requests fail before any generation."""
        return self.scorer.get_persona(name)

    def list_personas(self) -> list[Persona]:
        return list(self.scorer.personas.values())

    async def put_persona(self, name: str, body: PersonaBody) -> Persona:
        existing = self.scorer.personas.get(name)
        if existing is not None and existing.source == "file":
            raise Conflict(f"persona {name!r} ships with the service (models/personas); choose another name")
        target = body.target.model_dump(exclude_none=True) if body.target else {}
        persona = await self.scorer.build_persona(
            Persona(name=name, exemplars=body.exemplars, description=body.description, target=target, source="api")
        )
        if self.store is not None:
            try:
                await self.store.put_persona(name, persona.definition())
            except StoreUnavailable as exc:
                raise StoreDown("persona store is unavailable; nothing was changed, retry later") from exc
        self.scorer.personas[name] = persona
        return persona

    async def delete_persona(self, name: str) -> None:
        persona = self.scorer.get_persona(name)
        assert persona is not None
        if persona.source == "file":
            raise Conflict(f"persona {name!r} ships with the service and cannot be deleted")
        if self.store is not None:
            try:
                await self.store.delete_persona(name)
            except StoreUnavailable as exc:
                raise StoreDown("persona store is unavailable; nothing was changed, retry later") from exc
        del self.scorer.personas[name]

    # ---- scoring --------------------------------------------------------------------------------------------
    async def score(
        self, texts: list[str], *, persona: str | None, label: str, include_embedding: bool = False
    ) -> list[dict[str, Any]]:
        return await self.scorer.score(texts, persona=persona, label=label, include_embedding=include_embedding)

    async def score_request(self, body: ScoreRequest) -> list[dict[str, Any]]:
        source = body.adapter or EXTERNAL
        label = self.source_label(body.adapter)
        results = await self.score(
            body.texts, persona=body.persona, label=label, include_embedding=body.include_embedding
        )
        if body.session_id and self.history is not None:
            persona = self.scorer.get_persona(body.persona)
            for text, result in zip(body.texts, results, strict=True):  # a batch is consecutive turns
                tone = {k: v for k, v in result.items() if k != "style_embedding"}
                result["drift"] = await self.history.observe(
                    TurnInput(
                        session_id=body.session_id,
                        source=source,
                        label=label,
                        persona=persona,
                        prompt=None,
                        response=text,
                        tone=tone,
                        kind="score",
                    )
                )
        return results
