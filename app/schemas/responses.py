"""POST /v1/responses, a text subset (what the Vercel AI SDK and `client.responses.create` send for plain text):
input as a string or messages, instructions, max_output_tokens, temperature, top_p, stream."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from app.engine.sampling import MIN_TEMPERATURE, MIN_TOP_P
from app.schemas.common import NON_BLANK, SCHEMA_BLANK, NameField, SessionId, Strict, encodable, temperature_schema

UNSUPPORTED_RESPONSE_FIELDS = {
    "previous_response_id": "stored conversation state (send the whole input instead)",
    "conversation": "stored conversations",
    "reasoning": "reasoning settings (the served model does not reason)",
    "background": "background responses",
    "prompt": "stored prompt templates",
    "include": "extra output items",
    "max_tool_calls": "tool calls",
    "top_logprobs": "logprobs",
}
NO_OP_RESPONSE_FIELDS = (
    "store",
    "metadata",
    "user",
    "service_tier",
    "truncation",
    "parallel_tool_calls",
    "safety_identifier",
    "prompt_cache_key",
)


class InputText(Strict):
    type: Literal["input_text", "output_text", "text"]
    text: str
    annotations: list[Any] | None = None


class InputMessage(Strict):
    # as for chat messages: a user message needs non-blank text, and the document says so
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"role": {"const": "user"}}},
            "then": {
                "properties": {
                    "content": {
                        "anyOf": [
                            {"type": "string", "pattern": NON_BLANK},
                            {"type": "array", "contains": {"properties": {"text": {"pattern": NON_BLANK}}}},
                        ]
                    }
                }
            },
        }
    )

    type: Literal["message"] | None = None
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[InputText]
    id: str | None = None
    status: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    @model_validator(mode="after")
    def _user_text(self) -> InputMessage:
        if self.role == "user" and not self.text().strip(SCHEMA_BLANK):
            raise ValueError("a user message needs non-empty content")
        return self


class TextConfig(Strict):
    format: dict[str, Any] | None = Field(
        None,
        description="only {'type': 'text'} (structured output: use /v1/chat/completions' response_format)",
        json_schema_extra={
            "anyOf": [
                {"type": "object", "properties": {"type": {"const": "text"}}, "required": ["type"]},
                {"type": "null"},
            ]
        },
    )
    verbosity: str | None = None

    @field_validator("format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "text":
            raise ValueError("only text.format {'type': 'text'} is supported by Tonewatch on /v1/responses")
        return value


class ResponseRequest(Strict):
    model: str | None = None
    input: Annotated[str, StringConstraints(pattern=NON_BLANK)] | Annotated[list[InputMessage], Field(min_length=1)]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0, json_schema_extra=temperature_schema(MIN_TEMPERATURE))
    top_p: float | None = Field(None, ge=MIN_TOP_P, le=1.0)
    stream: bool = False
    text: TextConfig | None = None
    tools: list[Any] | None = Field(
        None,
        description="not supported here (an empty list or null): tools go through /v1/chat/completions",
        json_schema_extra={"anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}]},
    )
    tool_choice: Any = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    service_tier: str | None = None
    truncation: str | None = None
    parallel_tool_calls: bool | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    session_id: SessionId | None = None
    persona: NameField | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, value: str | list[InputMessage]) -> str | list[InputMessage]:
        if isinstance(value, str):
            if not value.strip(SCHEMA_BLANK):
                raise ValueError("input must not be empty")
            encodable(value)
        elif not value:
            raise ValueError("input must not be empty")
        return value

    @field_validator("temperature")
    @classmethod
    def _temperature_floor(cls, value: float | None) -> float | None:
        if value is not None and 0.0 < value < MIN_TEMPERATURE:
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE}")
        return value

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("tools are not supported on /v1/responses by Tonewatch; use /v1/chat/completions")
        return value
