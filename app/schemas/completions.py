"""POST /v1/completions (the legacy text-completion API LlamaIndex's OpenAILike uses by default)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator
from pydantic.json_schema import JsonDict

from app.engine.sampling import MAX_SEED, MIN_TEMPERATURE, MIN_TOP_P
from app.schemas.chat import StreamOptions
from app.schemas.common import (
    NON_BLANK,
    SCHEMA_BLANK,
    STOP_SCHEMA,
    LogitBias,
    NameField,
    SessionId,
    Strict,
    encodable,
    temperature_schema,
)

UNSUPPORTED_COMPLETION_FIELDS = {"suffix": "suffix (fill-in-the-middle)"}
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for this API
MAX_PROMPTS = 16
PROMPT_SCHEMA: JsonDict = {"type": "string", "pattern": NON_BLANK}  # what _prompt enforces, for the OpenAPI document


class CompletionRequest(Strict):
    # the document says what parse_completion refuses: a stream takes one prompt
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"stream": {"const": True}}, "required": ["stream"]},
            "then": {"properties": {"prompt": {"anyOf": [{"type": "string"}, {"type": "array", "maxItems": 1}]}}},
        }
    )

    model: str | None = None
    prompt: str | list[str] = Field(
        description=f"a string, or a list of 1 to {MAX_PROMPTS} strings (one choice each); none empty",
        json_schema_extra={
            "anyOf": [PROMPT_SCHEMA, {"type": "array", "items": PROMPT_SCHEMA, "minItems": 1, "maxItems": MAX_PROMPTS}]
        },
    )
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0, json_schema_extra=temperature_schema(MIN_TEMPERATURE))
    top_p: float | None = Field(None, ge=MIN_TOP_P, le=1.0)
    n: Literal[1] | None = Field(None, description="only 1 (one choice per request)")
    best_of: Literal[1] | None = Field(None, description="only 1")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, json_schema_extra=STOP_SCHEMA)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    echo: Literal[False] | None = Field(None, description="not supported: false or absent")
    logprobs: int | None = Field(None, ge=0, le=5)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: LogitBias | None = None
    user: str | None = Field(None, max_length=256)
    session_id: SessionId | None = None
    persona: NameField | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str | list[str]) -> str | list[str]:
        prompts = [value] if isinstance(value, str) else value
        if not prompts or len(prompts) > MAX_PROMPTS:
            raise ValueError(f"send 1 to {MAX_PROMPTS} prompts")
        for p in prompts:
            if not p.strip(SCHEMA_BLANK):
                raise ValueError("prompts must not be empty")
            encodable(p)
        return value

    @field_validator("temperature")
    @classmethod
    def _temperature_floor(cls, value: float | None) -> float | None:
        if value is not None and 0.0 < value < MIN_TEMPERATURE:
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE}")
        return value

    @field_validator("n", "best_of", mode="before")  # before the Literal check: our message, not pydantic's
    @classmethod
    def _one(cls, value: object) -> object:
        if value is not None and (isinstance(value, bool) or value != 1):
            raise ValueError("only 1 is supported by Tonewatch")
        return value

    @field_validator("echo", mode="before")
    @classmethod
    def _no_echo(cls, value: object) -> object:
        if value is True:
            raise ValueError("echo is not supported by Tonewatch")
        if value is not None and value is not False:
            raise ValueError("echo must be false or absent")  # (0 is not false here: the document says boolean)
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("at most 4 non-empty stop sequences")
        return stops

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
