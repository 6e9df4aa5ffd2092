"""OpenAI chat-completions wire format as the embedded engine serves it, plus Tonewatch's extension fields.

Fields real clients send that change nothing here (store, metadata, service_tier, ...) are accepted and ignored;
fields that would change the output and are not implemented are refused by name before validation (see
UNSUPPORTED_FIELDS); anything else unknown is a 400 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonDict

from app.engine.sampling import MAX_SEED, MIN_TEMPERATURE, MIN_TOP_P
from app.errors import Conflict, NotFound
from app.schemas.common import (
    NON_BLANK,
    SCHEMA_BLANK,
    SESSION_ID_PATTERN,
    STOP_SCHEMA,
    LogitBias,
    NameField,
    SessionId,
    Strict,
    TextPart,
    encodable,
    temperature_schema,
    text_of,
)
from app.schemas.satisfiable import unsatisfiable

__all__ = ["SESSION_ID_PATTERN", "NameField", "SessionId", "Strict", "TextPart", "encodable"]

FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TOP_LOGPROBS = 20
# Fields that would change the output and that Tonewatch does not implement: refused by name, never ignored.
UNSUPPORTED_FIELDS = {
    "audio": "audio output",
    "prediction": "predicted outputs",
    "web_search_options": "web search",
    "reasoning_effort": "reasoning effort (the served model does not reason)",
    "verbosity": "verbosity control",
    "functions": "legacy `functions` (use `tools`)",
    "function_call": "legacy `function_call` (use `tool_choice`)",
}
NO_OP_FIELDS = (
    "store",
    "metadata",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "modalities",
    "user",
    "parallel_tool_calls",
)


def boolean_schema(value: Any) -> Any:
    """JSON Schema's boolean forms: `true` (anything) becomes {}; `false` matches nothing, so it is refused."""
    if value is False:
        raise ValueError("the schema `false` matches no value, so nothing could ever be generated for it")
    return {} if value is True else value


def satisfiable(schema: dict[str, Any]) -> dict[str, Any]:
    reason = unsatisfiable(schema)
    if reason:
        raise ValueError(f"no finite JSON value matches this schema: {reason}")
    return schema


class FunctionDef(Strict):
    name: Annotated[str, StringConstraints(pattern=FUNCTION_NAME)]
    description: str | None = Field(None, max_length=4096)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters", mode="before")
    @classmethod
    def _boolean_parameters(cls, value: Any) -> Any:
        return boolean_schema(value)

    @field_validator("parameters")
    @classmethod
    def _callable(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        reason = unsatisfiable(value) if value is not None else None
        if reason:
            name = info.data.get("name", "?")
            raise ValueError(f"function {name!r}: no arguments can match this schema: {reason}")
        return value


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Strict):
    name: Annotated[str, StringConstraints(pattern=FUNCTION_NAME)]


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class ToolCallFunction(Strict):
    name: str
    arguments: str


class ToolCall(Strict):
    id: str = Field(max_length=128)
    type: Literal["function"] = "function"
    function: ToolCallFunction


def _present(field: str) -> JsonDict:
    return {"required": [field], "properties": {field: {"not": {"type": "null"}}}}


def _role_is(*roles: str) -> JsonDict:
    return {"properties": {"role": {"enum": list(roles)}}}


# _roles below, said in the document (JSON Schema if/then), so a client or a fuzzer can tell a message we refuse
# from one we take
MESSAGE_RULES: JsonDict = {
    "allOf": [
        {
            "if": _role_is("user"),
            "then": {
                "required": ["content"],
                "properties": {
                    "content": {
                        "anyOf": [
                            {"type": "string", "pattern": NON_BLANK},
                            {
                                "type": "array",
                                "contains": {"type": "object", "properties": {"text": {"pattern": NON_BLANK}}},
                            },
                        ]
                    }
                },
            },
        },
        {"if": _role_is("system", "developer"), "then": _present("content")},
        {"if": _role_is("tool"), "then": {"allOf": [_present("tool_call_id"), _present("content")]}},
        {
            "if": _role_is("assistant"),
            "then": {
                "anyOf": [
                    _present("content"),
                    {"required": ["tool_calls"], "properties": {"tool_calls": {"type": "array", "minItems": 1}}},
                ]
            },
            "else": {"properties": {"tool_calls": {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]}}},
        },
    ]
}


class ChatMessage(Strict):
    model_config = ConfigDict(json_schema_extra=MESSAGE_RULES)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=128)
    tool_calls: list[ToolCall] | None = None  # assistant turns that called tools
    tool_call_id: str | None = Field(None, max_length=128)  # tool results
    # what `model_dump()` of an OpenAI assistant message carries; accepted and ignored
    refusal: str | None = None
    annotations: list[Any] | None = None
    audio: None = None
    function_call: None = None

    def text(self) -> str:
        return text_of(self.content)

    @field_validator("content")
    @classmethod
    def _valid_text(cls, value: str | list[TextPart] | None) -> str | list[TextPart] | None:
        return encodable(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _roles(self) -> ChatMessage:
        if self.role == "user" and not self.text().strip(SCHEMA_BLANK):
            raise ValueError("a user message needs non-empty content")
        if self.role in ("system", "developer") and self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        if self.role == "tool" and (self.tool_call_id is None or self.content is None):
            raise ValueError("a tool message needs tool_call_id and content (the tool's result)")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self


class StreamOptions(Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # OpenAI's SDKs may send it; nothing to obfuscate here


class TextFormat(Strict):
    type: Literal["text"]


class JsonObjectFormat(Strict):
    type: Literal["json_object"]


class JsonSchemaSpec(Strict):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None

    @field_validator("schema_", mode="before")
    @classmethod
    def _boolean_schema(cls, value: Any) -> Any:
        return boolean_schema(value)

    @field_validator("schema_")
    @classmethod
    def _satisfiable(cls, value: dict[str, Any]) -> dict[str, Any]:
        return satisfiable(value)


class JsonSchemaFormat(Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]
FORMATS: dict[str, type[Strict]] = {
    "text": TextFormat,
    "json_object": JsonObjectFormat,
    "json_schema": JsonSchemaFormat,
}


# The cross-field rules of _tools below, said in the document
REQUEST_RULES: JsonDict = {
    "allOf": [
        {
            "if": {"required": ["top_logprobs"], "properties": {"top_logprobs": {"type": "integer", "minimum": 1}}},
            "then": {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}},
        },
        {
            "if": {"required": ["tool_choice"], "properties": {"tool_choice": {"const": "required"}}},
            "then": {"required": ["tools"], "properties": {"tools": {"type": "array", "minItems": 1}}},
        },
        {
            "if": {
                "required": ["tools", "response_format"],
                "properties": {
                    "tools": {"type": "array", "minItems": 1},
                    "response_format": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"enum": ["json_object", "json_schema"]}},
                    },
                },
            },
            "then": {"required": ["tool_choice"], "properties": {"tool_choice": {"const": "none"}}},
        },
    ]
}


def tool_conflicts(req: ChatCompletionRequest) -> None:
    """Tool rules between values (not expressible in the document): a function name twice is a conflict (409), a
    named tool_choice that names no offered function is not found (404)."""
    names = [t.function.name for t in req.tools or []]
    if len(set(names)) != len(names):
        raise Conflict("tools: function names must be unique", param="tools")
    choice = req.tool_choice
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise NotFound(f"tool_choice names {choice.function.name!r}, which is not in tools", param="tool_choice")


class ChatCompletionRequest(Strict):
    model_config = ConfigDict(json_schema_extra=REQUEST_RULES)

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=512)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(
        None,
        ge=0.0,
        le=2.0,
        description=f"0 (greedy) or {MIN_TEMPERATURE}..2",
        json_schema_extra=temperature_schema(MIN_TEMPERATURE),
    )
    top_p: float | None = Field(None, ge=MIN_TOP_P, le=1.0)
    stop: str | list[str] | None = Field(None, json_schema_extra=STOP_SCHEMA)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] | None = Field(None, description="only 1 (one choice per request)")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: LogitBias | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    # accepted and ignored (they change nothing in the answer): see NO_OP_FIELDS
    parallel_tool_calls: bool | None = None
    user: str | None = Field(None, max_length=256)
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = Field(None, max_length=32)
    safety_identifier: str | None = Field(None, max_length=256)
    prompt_cache_key: str | None = Field(None, max_length=256)
    modalities: list[Literal["text"]] | None = None
    # Tonewatch extensions
    session_id: SessionId | None = None
    persona: NameField | None = None

    @field_validator("response_format", mode="wrap")
    @classmethod
    def _format(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Validated by its own class when the tag is known, so an error's path is response_format.json_schema...
        (pydantic's tagged union puts the tag in the path: response_format.json_schema.json_schema.schema)."""
        kind = value.get("type") if isinstance(value, dict) else None
        if isinstance(kind, str) and kind in FORMATS:  # (a non-string tag, e.g. {}, is the union's to refuse)
            return FORMATS[kind].model_validate(value)
        return handler(value)

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

    @field_validator("n", mode="before")  # before the Literal check: our message, not pydantic's
    @classmethod
    def _only_one_choice(cls, value: object) -> object:
        if value is not None and (isinstance(value, bool) or value != 1):
            raise ValueError("only n=1 is supported by Tonewatch")
        return value

    @model_validator(mode="after")
    def _tools(self) -> ChatCompletionRequest:
        # (unique function names and a named tool_choice that names one of them depend on values the document
        # cannot relate: checked where the request is routed, as 409 and 404; see tool_conflicts)
        choice = self.tool_choice
        names = {t.function.name for t in self.tools or []}
        if choice == "required" and not names:
            raise ValueError("tool_choice 'required' needs tools")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.tools and not isinstance(self.response_format, TextFormat | None) and choice != "none":
            raise ValueError("tools and a structured response_format cannot be combined in one request")
        return self


# ---- responses ------------------------------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: dict[str, str]


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ResponseToolCall] | None = None


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: str
    logprobs: dict[str, Any] | None = None


class ChatCompletion(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    # Tonewatch extensions
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
