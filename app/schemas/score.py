"""/v1/score and persona admin bodies."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, field_validator

from app.schemas.common import NON_BLANK, SCHEMA_BLANK, NameField, SessionId, Strict, encodable

MAX_TEXT_CHARS = 8000
PERSONA_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
PersonaName = Annotated[str, StringConstraints(pattern=PERSONA_NAME)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]


ScoreText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS, pattern=NON_BLANK)]


class ScoreRequest(Strict):
    texts: list[ScoreText] = Field(min_length=1, max_length=256)
    persona: PersonaName | None = None
    session_id: SessionId | None = None
    adapter: NameField | None = Field(None, description="label for where the texts came from (metrics, history)")
    include_embedding: bool = False

    @field_validator("texts", mode="before")
    @classmethod
    def _texts(cls, texts: object) -> object:
        if not isinstance(texts, list):
            return texts
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                continue
            if not text.strip(SCHEMA_BLANK):
                raise ValueError(f"texts[{i}] is empty")
            if len(text) > MAX_TEXT_CHARS:
                raise ValueError(f"texts[{i}] has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
            try:
                encodable(text)
            except ValueError as exc:
                raise ValueError(f"texts[{i}] {exc}") from None
        return texts


class PersonaTarget(Strict):
    formality: Unit | None = None
    politeness: Unit | None = None
    warmth: Unit | None = None


class PersonaBody(Strict):
    exemplars: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]] = Field(
        min_length=5, max_length=200
    )
    target: PersonaTarget | None = None
    description: str = Field("", max_length=2000)


class ToneReport(BaseModel):
    label: str = Field(description="formal | friendly | casual | robotic")
    probs: dict[str, float]
    formality: float
    politeness: float
    warmth: float
    persona: str | None = None
    persona_distance: float | None = None
    persona_match: bool | None = None
    style_embedding: list[float] | None = None
    drift: dict[str, Any] | None = None


class ScoreResponse(BaseModel):
    object: str = "tone.score"
    persona: str | None = None
    results: list[ToneReport]


class PersonaPublic(BaseModel):
    name: str
    description: str
    exemplars: list[str]
    target: dict[str, float]
    source: str
    match_threshold: float
    exemplar_distance_p50: float
    exemplar_dimension_means: dict[str, float]


class PersonaList(BaseModel):
    data: list[PersonaPublic]
