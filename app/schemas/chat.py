"""OpenAI chat-completions wire format (the subset we serve) plus Tonewatch's extension fields."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from app.engine.sampling import MAX_SEED, MIN_TEMPERATURE, MIN_TOP_P

SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
NameField = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class Strict(BaseModel):
    # strict: "5" is not an int; forbid: a misspelt field is an error, not silently ignored
    model_config = ConfigDict(extra="forbid", strict=True)


def encodable(text: str) -> str:
    """Refuse text the tokenizers cannot take (lone UTF-16 surrogates from broken JSON escapes such as "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"contains an unpaired UTF-16 surrogate at character {exc.start}; send valid Unicode"
        ) from None
    return text


class TextPart(Strict):
    type: Literal["text"]
    text: str

    @field_validator("text")
    @classmethod
    def _valid_text(cls, value: str) -> str:
        return encodable(value)


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    @field_validator("content")
    @classmethod
    def _valid_text(cls, value: str | list[TextPart]) -> str | list[TextPart]:
        return encodable(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _user_says_something(self) -> ChatMessage:
        if self.role == "user" and not self.text().strip():
            raise ValueError("a user message must not be empty")
        return self


class StreamOptions(Strict):
    include_usage: bool = False


class ChatCompletionRequest(Strict):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=512)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0, description=f"0 (greedy) or {MIN_TEMPERATURE}..2")
    top_p: float | None = Field(None, ge=MIN_TOP_P, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    user: str | None = Field(None, max_length=256)
    # accepted for client compatibility; only their neutral values are supported
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    # Tonewatch extensions
    session_id: SessionId | None = None
    persona: NameField | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return stops

    @field_validator("temperature")
    @classmethod
    def _temperature_floor(cls, value: float | None) -> float | None:
        if value is not None and 0.0 < value < MIN_TEMPERATURE:
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE}")
        return value

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalties(cls, value: float | None) -> float | None:
        if value:
            raise ValueError("penalties are not supported; send 0 or omit")
        return value


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    # Tonewatch extensions (absent until scoring / sessions are wired)
    tone: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")  # an upstream's own card fields pass through

    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "tonewatch"
    root: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
