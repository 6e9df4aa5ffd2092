"""Tone flow: score texts (chat responses or posted ones), manage personas (validate -> calibrate -> persist ->
install, so a failure leaves everything as it was)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from app.engine.worker import DoneEvent
from app.errors import Conflict, StoreDown
from app.schemas.chat import ChatCompletionRequest
from app.schemas.score import PersonaBody, ScoreRequest
from app.scoring.personas import Persona
from app.scoring.scorer import ToneScorer
from app.services.history import HistoryService, TurnInput
from app.store.base import StoreUnavailable

log = logging.getLogger("tonewatch.tone")


class PersonaStore(Protocol):
    async def put_persona(self, name: str, data: dict) -> None: ...
    async def get_personas(self) -> dict[str, dict]: ...
    async def delete_persona(self, name: str) -> bool: ...


class ToneService:
    def __init__(self, scorer: ToneScorer, store: PersonaStore | None, default_persona: str | None = None,
                 history: HistoryService | None = None):
        self.scorer = scorer
        self.store = store
        self.default_persona = default_persona
        self.history = history

    async def restore_personas(self) -> None:
        """API-defined personas persist in the store; a broken one is logged and skipped, not fatal."""
        if self.store is None:
            return
        for name, data in (await self.store.get_personas()).items():
            try:
                persona = Persona(name=name, exemplars=data["exemplars"], description=data.get("description", ""),
                                  target=data.get("target") or {}, source="api")
                self.scorer.personas[name] = await self.scorer.build_persona(persona)
            except Exception:
                log.exception("skipping stored persona %s", name)

    def persona_for(self, requested: str | None, adapter: str | None) -> str | None:
        if requested is not None:
            return requested
        if adapter is not None and adapter in self.scorer.personas:
            return adapter  # an adapter trained for a persona is judged against it
        return self.default_persona

    async def score_request(self, body: ScoreRequest, adapter: str) -> list[dict[str, Any]]:
        results = await self.scorer.score(body.texts, persona=body.persona, adapter=adapter,
                                          include_embedding=body.include_embedding)
        if body.session_id and self.history is not None:
            persona = self.scorer.get_persona(body.persona)
            for text, result in zip(body.texts, results, strict=True):  # a batch is consecutive turns
                tone = {k: v for k, v in result.items() if k != "style_embedding"}
                result["drift"] = await self.history.observe(TurnInput(
                    session_id=body.session_id, adapter=adapter, persona=persona, prompt=None, response=text,
                    tone=tone))
        return results

    async def chat_finisher(self, req: ChatCompletionRequest, model: str, adapter: str | None,
                            done: DoneEvent, extra: dict[str, Any]) -> dict[str, Any]:
        if not done.text.strip():
            return {}
        persona_name = self.persona_for(req.persona, adapter)
        [report] = await self.scorer.score([done.text], persona=persona_name, adapter=adapter or "base")
        out: dict[str, Any] = {"tone": report}
        if req.session_id and self.history is not None:
            out["drift"] = await self.history.observe(TurnInput(
                session_id=req.session_id, adapter=adapter or "base", persona=self.scorer.get_persona(persona_name),
                prompt=req.messages[-1].text(), response=done.text, tone=report, request_id=done.request_id,
                latency={"queue_s": round(done.queue_s, 4), "ttft_s": round(done.ttft_s, 4),
                         "total_s": round(done.total_s, 4), "tokens": done.completion_tokens}))
        return out

    async def put_persona(self, name: str, body: PersonaBody) -> Persona:
        existing = self.scorer.personas.get(name)
        if existing is not None and existing.source == "file":
            raise Conflict(f"persona {name!r} ships with the service (models/personas); choose another name")
        target = body.target.model_dump(exclude_none=True) if body.target else {}
        persona = await self.scorer.build_persona(
            Persona(name=name, exemplars=body.exemplars, description=body.description, target=target, source="api"))
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
