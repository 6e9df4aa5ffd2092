"""/v1/score and persona admin bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, field_validator

from app.schemas.chat import NameField, SessionId, Strict

MAX_TEXT_CHARS = 8000
PERSONA_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
PersonaName = Annotated[str, StringConstraints(pattern=PERSONA_NAME)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class ScoreRequest(Strict):
    texts: list[str] = Field(min_length=1, max_length=256)
    persona: PersonaName | None = None
    session_id: SessionId | None = None
    adapter: NameField | None = Field(None, description="label for where the texts came from (metrics, history)")
    include_embedding: bool = False

    @field_validator("texts")
    @classmethod
    def _texts(cls, texts: list[str]) -> list[str]:
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"texts[{i}] is empty")
            if len(text) > MAX_TEXT_CHARS:
                raise ValueError(f"texts[{i}] has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        return texts


class PersonaTarget(Strict):
    formality: Unit | None = None
    politeness: Unit | None = None
    warmth: Unit | None = None


class PersonaBody(Strict):
    exemplars: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]] = Field(
        min_length=5, max_length=200)
    target: PersonaTarget | None = None
    description: str = Field("", max_length=2000)
