"""Per-row next-token choice, so every request in a mixed batch keeps its own sampling settings.

A row whose sampling fails (a value that slipped past validation, NaN logits) fails alone: `choose_tokens` returns
the exception in that row's slot instead of raising for the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def make_generator(params: SamplingParams) -> torch.Generator | None:
    if params.greedy:
        return None
    gen = torch.Generator(device="cpu")
    if params.seed is not None:
        gen.manual_seed(params.seed)
    else:
        gen.seed()
    return gen


def _sample_row(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator) -> int:
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


def choose_tokens(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[int | Exception]:
    """logits: [rows, vocab] for the last position. Greedy rows share one argmax; sampled rows go one by one
    on the CPU with their own seeded generator, so a seed reproduces regardless of batch neighbours."""
    greedy = torch.argmax(logits, dim=-1).tolist()
    out: list[int | Exception] = []
    for i, p in enumerate(params):
        if p.greedy:
            out.append(greedy[i])
            continue
        try:
            out.append(_sample_row(logits[i].cpu(), p, generators[i]))
        except Exception as exc:  # this row alone
            out.append(exc)
    return out
