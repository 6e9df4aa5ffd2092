"""What the worker batches: a Row (one request being generated) and a Lane (rows that share one forward and one
KV cache). Rows whose adapters PEFT can mix share the mixed lane; an adapter PEFT cannot mix gets a lane of its own."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from app.engine import kv
from app.engine.events import RequestHandle
from app.engine.sampling import Pick, RowSampler
from app.engine.text import TextAssembler
from app.errors import Cancelled, EngineUnavailable, GenerationFailed, ModelNotFound

MIXED_LANE = "__mixed__"


@dataclass
class Row:
    handle: RequestHandle
    assembler: TextAssembler
    sampler: RowSampler
    admitted: float
    first_token: float = 0.0
    last_token: float = 0.0
    n_generated: int = 0
    pending_logprobs: list[Pick] = field(default_factory=list)  # raw; the backend shapes them (openai_format)
    fed: list[int] = field(default_factory=list)  # tokens fed to decode steps: their keys/values are cached
    prompt_in_cache: int | None = None  # prompt tokens cached before decoding (None: all; see Prefill.join)

    @property
    def adapter_label(self) -> str:
        return self.handle.request.adapter or "base"

    def take_logprobs(self) -> list[Pick] | None:
        if not self.pending_logprobs:
            return None
        taken, self.pending_logprobs = self.pending_logprobs, []
        return taken


class Lane:
    def __init__(self, key: str):
        self.key = key
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None
        self.next_tokens: list[Pick | Exception] = []
        self.failures = 0

    def remove(self, indices: list[int]) -> None:
        """Drop rows (and their cache rows) by index."""
        gone = set(indices)
        keep = [i for i in range(len(self.rows)) if i not in gone]
        self.rows = [self.rows[i] for i in keep]
        self.next_tokens = [self.next_tokens[i] for i in keep]
        if not keep:
            self.cache, self.mask = None, None
            return
        assert self.cache is not None and self.mask is not None
        self.mask = kv.select_rows(self.cache, self.mask, keep)

    def drop_cancelled(self) -> None:
        gone = [i for i, r in enumerate(self.rows) if r.handle.cancelled]
        for i in gone:
            self.rows[i].handle.fail(Cancelled("client went away"))
        if gone:
            self.remove(gone)


def row_error(exc: Exception, stage: str) -> Exception:
    """What a row's client is told when its generation failed at `stage` (the others go on)."""
    if isinstance(exc, EngineUnavailable | GenerationFailed | ModelNotFound):
        return exc
    return GenerationFailed(
        f"generation failed while {stage} this request ({type(exc).__name__}); other requests were not affected"
    )
