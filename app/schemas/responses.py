"""POST /v1/responses, a text subset (what the Vercel AI SDK and `client.responses.create` send for plain text):
input as a string or messages, instructions, max_output_tokens, temperature, top_p, stream."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from app.engine.sampling import MIN_TEMPERATURE, MIN_TOP_P
from app.schemas.common import NameField, SessionId, Strict, encodable

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
    type: Literal["message"] | None = None
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[InputText]
    id: str | None = None
    status: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class TextConfig(Strict):
    format: dict[str, Any] | None = None
    verbosity: str | None = None

    @field_validator("format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "text":
            raise ValueError("only text.format {'type': 'text'} is supported by Tonewatch on /v1/responses")
        return value


class ResponseRequest(Strict):
    model: str | None = None
    input: str | list[InputMessage]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=MIN_TOP_P, le=1.0)
    stream: bool = False
    text: TextConfig | None = None
    tools: list[Any] | None = None
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
            if not value.strip():
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
