"""Tone flow: score texts (chat responses or posted ones), manage personas (validate -> calibrate -> persist ->
install, so a failure leaves everything as it was), and the bounded metric label of where a text came from."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from app.errors import Conflict
from app.schemas.score import PersonaBody, ScoreRequest
from app.scoring.personas import Persona
from app.scoring.scorer import ToneScorer
from app.services.history import HistoryService, TurnInput
from app.telemetry import NO_TELEMETRY, Telemetry

log = logging.getLogger("tonewatch.tone")
EXTERNAL = "external"


class ToneService:
    def __init__(
        self,
        scorer: ToneScorer,
        *,
        default_persona: str | None = None,
        history: HistoryService | None = None,
        score_sources: list[str] | None = None,
        served_models: Callable[[], set[str]] = set,
        telemetry: Telemetry = NO_TELEMETRY,
    ):
        self.telemetry = telemetry  # a span per scoring call; /v1/score's results as evaluation events
        self.scorer = scorer
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
    async def sync_personas(self, wanted: dict[str, dict]) -> dict[str, str]:
        """Bring the API-defined personas in line with the shared document; returns name -> error for those this
        replica could not build (the others are installed regardless)."""
        errors: dict[str, str] = {}
        current = {name: p for name, p in self.scorer.personas.items() if p.source == "api"}
        for name in set(current) - set(wanted):
            del self.scorer.personas[name]
        for name, definition in wanted.items():
            existing = self.scorer.personas.get(name)
            if existing is not None and existing.source == "file":
                errors[name] = "a shipped persona has this name; the shared definition is ignored here"
                continue
            if existing is not None and existing.definition() == {"name": name, **_definition(definition)}:
                continue
            try:
                self.scorer.personas[name] = await self.scorer.build_persona(
                    Persona(
                        name=name,
                        exemplars=definition["exemplars"],
                        description=definition.get("description", ""),
                        target=definition.get("target") or {},
                        source="api",
                    )
                )
            except Exception as exc:
                errors[name] = getattr(exc, "message", str(exc))
        return errors

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

    async def build_persona(self, name: str, body: PersonaBody) -> Persona:
        """Validate and calibrate (nothing is installed: the caller shares it first, so a failure changes nothing)."""
        existing = self.scorer.personas.get(name)
        if existing is not None and existing.source == "file":
            raise Conflict(f"persona {name!r} ships with the service (models/personas); choose another name")
        target = body.target.model_dump(exclude_none=True) if body.target else {}
        return await self.scorer.build_persona(
            Persona(name=name, exemplars=body.exemplars, description=body.description, target=target, source="api")
        )

    def install_persona(self, persona: Persona) -> None:
        self.scorer.personas[persona.name] = persona

    def removable_persona(self, name: str) -> Persona:
        persona = self.scorer.get_persona(name)
        assert persona is not None
        if persona.source == "file":
            raise Conflict(f"persona {name!r} ships with the service and cannot be deleted")
        return persona

    def remove_persona(self, name: str) -> None:
        self.scorer.personas.pop(name, None)

    # ---- scoring --------------------------------------------------------------------------------------------
    async def score(
        self, texts: list[str], *, persona: str | None, label: str, include_embedding: bool = False
    ) -> list[dict[str, Any]]:
        with self.telemetry.span("tonewatch.tone_score", {"tonewatch.texts": len(texts)}):
            return await self.scorer.score(texts, persona=persona, label=label, include_embedding=include_embedding)

    async def score_request(self, body: ScoreRequest, owner: str | None = None) -> list[dict[str, Any]]:
        source = body.adapter or EXTERNAL
        with self.telemetry.score_call(session_id=body.session_id, source=source, texts=len(body.texts)):
            results = await self._score_request(body, owner)
            for index, result in enumerate(results):
                self.telemetry.evaluations(result, index=index)
        return results

    async def _score_request(self, body: ScoreRequest, owner: str | None) -> list[dict[str, Any]]:
        source = body.adapter or EXTERNAL
        label = self.source_label(body.adapter)
        if body.session_id and self.history is not None:
            await self.history.claim(body.session_id, owner)
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
                        owner=owner,
                    )
                )
        return results


def _definition(d: dict) -> dict:
    return {"description": d.get("description", ""), "exemplars": d["exemplars"], "target": d.get("target") or {}}
