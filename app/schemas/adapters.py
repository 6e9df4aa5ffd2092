"""Admin adapter bodies (Tonewatch's own and vLLM's runtime-LoRA shapes)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.chat import Strict


class LoadAdapter(Strict):
    name: str = Field(min_length=1, max_length=64)
    path: str = Field(min_length=1, max_length=1024, description="relative to TONEWATCH_ADAPTER_ROOT")
    activate: bool = False


class VllmLoad(Strict):
    lora_name: str = Field(min_length=1, max_length=64)
    lora_path: str = Field(min_length=1, max_length=1024)


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
