"""Per-row next-token choice inside a mixed batch: every row keeps its own temperature, top_p, seed, logit bias,
presence/frequency penalties, logprobs and (optionally) a grammar that constrains it.

One step for a batch: logits [rows, vocab] -> per-row bias, penalties and grammar masks (only for rows that ask,
so plain rows pay nothing) -> logprobs where asked -> greedy rows share one argmax, sampled rows draw from their own
seeded generator (a seed reproduces whatever the batch neighbours are). A row whose sampling fails (a value that
slipped past validation, NaN logits, a grammar with no allowed token) fails alone: its slot holds the exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from app.engine.string_guard import StringGuard

# Below these a softmax over float32 logits under/overflows; the API refuses such values and the engine clamps.
MIN_TEMPERATURE = 0.01
MIN_TOP_P = 1e-4
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class Pick:
    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


def make_generator(params: SamplingParams) -> torch.Generator | None:
    if params.greedy:
        return None
    gen = torch.Generator(device="cpu")
    if params.seed is not None:
        gen.manual_seed(params.seed)
    else:
        gen.seed()
    return gen


@dataclass
class RowSampler:
    """One request's sampling state: its generator, the counts its penalties need, and its grammar matcher
    (an llguidance LLMatcher, or None)."""

    params: SamplingParams
    matcher: Any = None
    generator: torch.Generator | None = None
    counts: dict[int, int] = field(default_factory=dict)
    _mask: np.ndarray | None = None
    guard: StringGuard | None = None  # repetition guard inside JSON strings (structured output only)

    @classmethod
    def create(cls, params: SamplingParams, matcher: Any = None, guard: StringGuard | None = None) -> RowSampler:
        return cls(params, matcher, make_generator(params), guard=guard)

    @property
    def penalized(self) -> bool:
        return bool(self.params.presence_penalty or self.params.frequency_penalty) and bool(self.counts)

    @property
    def processed(self) -> bool:
        """Needs its own work on the logits this step (plain rows skip all of it)."""
        return bool(self.params.logit_bias) or self.penalized or self.matcher is not None or self.params.logprobs

    def adjust(self, row: torch.Tensor) -> None:
        """Bias, penalties and the grammar mask, in place on this row's float32 logits."""
        p = self.params
        if p.logit_bias:
            ids = torch.tensor([i for i, _ in p.logit_bias if i < row.shape[0]], dtype=torch.long)
            values = torch.tensor([b for i, b in p.logit_bias if i < row.shape[0]], dtype=row.dtype)
            row.index_add_(0, ids, values)
        if self.penalized:
            ids = torch.tensor(list(self.counts), dtype=torch.long)
            counts = torch.tensor(list(self.counts.values()), dtype=row.dtype)
            row.index_add_(0, ids, -(p.frequency_penalty * counts + p.presence_penalty))
        if self.matcher is not None:
            row.masked_fill_(~torch.from_numpy(self._allowed(row.shape[0])), float("-inf"))
        if self.guard is not None:
            banned = torch.tensor([t for t in self.guard.banned() if t < row.shape[0]], dtype=torch.long)
            if banned.numel():
                kept = row[banned].clone()
                row[banned] = float("-inf")
                if not bool(torch.isfinite(row).any()):  # the grammar allows nothing else: let it repeat
                    row[banned] = kept

    def _allowed(self, vocab: int) -> np.ndarray:
        words = (vocab + 31) // 32
        if self._mask is None or self._mask.shape[0] != words:
            self._mask = np.zeros(words, dtype=np.int32)
        self.matcher.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
        if self.matcher.is_error():
            raise ValueError(f"grammar error: {self.matcher.get_error()}")
        return np.unpackbits(self._mask.view(np.uint8), bitorder="little")[:vocab].astype(bool)

    def accept(self, token: int) -> None:
        """Commit the chosen token (grammar state, penalty counts)."""
        if self.params.presence_penalty or self.params.frequency_penalty:
            self.counts[token] = self.counts.get(token, 0) + 1
        if self.matcher is not None and not self.matcher.consume_token(token):
            raise ValueError(f"grammar refused token {token}: {self.matcher.get_error()}")
        if self.guard is not None:
            self.guard.accept(token)

    @property
    def grammar_done(self) -> bool:
        return self.matcher is not None and self.matcher.is_stopped()


def _sample_row(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    temperature = max(params.temperature, MIN_TEMPERATURE)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if not bool(torch.isfinite(probs).all()):
        raise FloatingPointError("non-finite probabilities")
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # keep the smallest prefix whose mass reaches top_p; the most likely token always stays
        drop = cumulative - sorted_probs >= max(params.top_p, MIN_TOP_P)
        drop[0] = False
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        pick = torch.multinomial(sorted_probs, 1, generator=gen)
        return int(order[pick])
    return int(torch.multinomial(probs, 1, generator=gen))


def sample(logits: torch.Tensor, samplers: list[RowSampler]) -> list[Pick | Exception]:
    """logits: [rows, vocab] for the last position; one Pick (or the row's exception) per row."""
    out: list[Pick | Exception | None] = [None] * len(samplers)
    processed = [i for i, s in enumerate(samplers) if s.processed]
    if processed:
        logits = logits.float().clone()  # only rows that ask are touched, but never the model's own tensor
        for i in processed:
            try:
                samplers[i].adjust(logits[i])
            except Exception as exc:  # this row alone
                out[i] = exc
    greedy = torch.argmax(logits, dim=-1).tolist()
    for i, s in enumerate(samplers):
        if out[i] is not None:
            continue
        try:
            token = greedy[i] if s.params.greedy else _sample_row(logits[i].cpu(), s.params, s.generator)
            if not bool(torch.isfinite(logits[i, token])):
                raise ValueError("no token is allowed here (grammar or bias excluded every token)")
            out[i] = Pick(token)
        except Exception as exc:
            out[i] = exc
    wants = [i for i, s in enumerate(samplers) if s.params.logprobs and isinstance(out[i], Pick)]
    if wants:
        logprobs = torch.log_softmax(logits[wants].float(), dim=-1)
        for row, i in enumerate(wants):
            pick = out[i]
            assert isinstance(pick, Pick)
            pick.logprob = float(logprobs[row, pick.token])
            k = samplers[i].params.top_logprobs
            if k:
                values, ids = torch.topk(logprobs[row], k)
                pick.top = list(zip(ids.tolist(), values.tolist(), strict=True))
    return out  # type: ignore[return-value]
