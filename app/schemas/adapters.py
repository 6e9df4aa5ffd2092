"""Admin adapter bodies (Tonewatch's own and vLLM's runtime-LoRA shapes)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from app.engine.adapter_paths import NAME_RE, InvalidAdapterError, validate_name
from app.schemas.chat import Strict


def _adapter_name(name: str) -> str:
    try:
        return validate_name(name)
    except InvalidAdapterError as exc:
        raise ValueError(exc.message) from None


# The rule the registry applies (app/engine/adapter_paths.validate_name), with its pattern in the OpenAPI document.
AdapterName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"pattern": f"^{NAME_RE.pattern}$"},
        description="A-Z a-z 0-9 _ -, starting with a letter or digit (PEFT keys adapters inside module paths)",
    ),
    AfterValidator(_adapter_name),
]
AdapterPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[^\x00]+$",  # a NUL byte can name no file: refused by the document, not only by the server
        description="relative to TONEWATCH_ADAPTER_ROOT; the folder's contents are validated when it loads (a folder "
        "that is no adapter is a 400 invalid_adapter: that depends on the files, not on the request's form)",
    ),
]


class LoadAdapter(Strict):
    name: AdapterName
    path: AdapterPath
    activate: bool = False


class VllmLoad(Strict):
    lora_name: AdapterName
    lora_path: AdapterPath


class VllmUnload(Strict):
    lora_name: str = Field(min_length=1, max_length=64)


class AdapterPublic(BaseModel):
    model_config = ConfigDict(extra="allow")  # conversion details for AdaLoRA/LoHa/LoKr/IA3 ride along

    name: str
    type: str
    peft_type: str
    rank: int | None
    alpha: float | None
    target_modules: list[str]
    trainable_params: int
    size_bytes: int
    path: str
    loaded_at: float
    requests_served: int
    mixable: bool
    active: bool


class AdapterListing(BaseModel):
    active: str
    base: str
    data: list[AdapterPublic]


class CanaryRequest(Strict):
    """Start a canary: `share` of new sessions go to the adapter; the rest stay on the current default."""

    share: float = Field(0.1, gt=0.0, le=0.5, description="fraction of new sessions served by the canary")
    persona: str = Field(min_length=1, max_length=64, description="the persona both arms are judged against")
    min_turns: int = Field(
        30,
        ge=5,
        le=100_000,
        strict=True,
        description='turns per arm before the canary can pass: a whole number (30 or 30.0, not 30.5 or "30")',
    )
    alpha: float = Field(0.05, gt=0.0, lt=0.5, description="false-rollback rate of the sequential test")
    beta: float = Field(0.10, gt=0.0, lt=0.5, description="missed-regression rate of the sequential test")
    relative_risk: float = Field(
        2.0,
        gt=1.0,
        le=100.0,
        description="the regression to detect: the canary's bad-turn rate this many times the current one's",
    )
    auto_promote: bool = Field(False, description="make the canary the default when it passes")

    @field_validator("min_turns", mode="before")
    @classmethod
    def _whole_number(cls, value: object) -> object:
        # JSON Schema's "integer" admits 30.0 (the document says integer): take a whole float as the integer
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value
