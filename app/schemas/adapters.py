"""Admin adapter bodies (Tonewatch's own and vLLM's runtime-LoRA shapes)."""

from __future__ import annotations

from pydantic import Field

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
