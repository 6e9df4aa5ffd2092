"""Chat-format training data for persona adapters.

An exchange is ``{"id", "topic", "messages": [...], "responses": {"friendly", "formal", "robotic"}}``. One training
example is the exchange's messages followed by the assistant response of the chosen persona, rendered with the
tokenizer's chat template. Only the final assistant turn is trained on: its content tokens plus the end-of-turn
token (``<|im_end|>`` for SmolLM2), so the adapter learns to stop; everything else (system prompt, user turns,
earlier assistant turns, the template's trailing newline) is labelled -100.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

IGNORE_INDEX = -100


@dataclass
class Example:
    id: str
    input_ids: list[int]
    labels: list[int]

    @property
    def n_target(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def data_sha256(paths: Sequence[str | Path]) -> str:
    """One digest over the files in the given order (the name and bytes of each)."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def load_exchanges(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """All exchanges from the JSONL files, sorted by id (deterministic whatever the file order); ids must be unique."""
    rows: dict[str, dict[str, Any]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row.get("messages"), list) or not row["messages"]:
                    raise ValueError(f"{path}:{line_no}: an exchange needs a non-empty 'messages' list")
                key = str(row.get("id", f"{Path(path).name}:{line_no}"))
                if key in rows:
                    raise ValueError(f"{path}:{line_no}: duplicate exchange id {key!r}")
                rows[key] = {**row, "id": key}
    return [rows[k] for k in sorted(rows)]


def _ids(encoded: Any) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def encode_example(
    tokenizer: Any,
    messages: list[dict[str, str]],
    response: str,
    *,
    max_len: int,
    system_prompt: str | None = None,
    example_id: str = "",
) -> Example | None:
    """Tokenize one conversation + response. Returns None when the response alone does not fit in ``max_len``.

    Too-long conversations lose their oldest tokens (the prompt's start), never the response being trained on.
    """
    msgs = [dict(m) for m in messages]
    if system_prompt:
        msgs = [{"role": "system", "content": system_prompt}, *[m for m in msgs if m["role"] != "system"]]
    prompt = _ids(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True))
    full = _ids(tokenizer.apply_chat_template([*msgs, {"role": "assistant", "content": response}], tokenize=True))
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template does not render the prompt as a prefix of the full conversation")
    answer = full[len(prompt) :]
    eos = tokenizer.eos_token_id
    if eos is not None and eos in answer:
        answer = answer[: answer.index(eos) + 1]  # content + end-of-turn; drop the template's trailing newline
    elif eos is not None:
        answer = [*answer, eos]
    if not answer or len(answer) > max_len:
        return None
    keep = max_len - len(answer)
    prompt = prompt[len(prompt) - keep :] if keep < len(prompt) else prompt
    if keep == 0:
        prompt = []
    return Example(example_id, prompt + answer, [IGNORE_INDEX] * len(prompt) + answer)


def build_examples(
    tokenizer: Any, exchanges: list[dict[str, Any]], persona: str, *, max_len: int, system_prompt: str | None = None
) -> tuple[list[Example], int]:
    """Examples for one persona key; returns (examples, number skipped because the response exceeds max_len)."""
    examples, skipped = [], 0
    for row in exchanges:
        responses = row.get("responses") or {}
        if persona not in responses:
            raise ValueError(f"exchange {row['id']!r} has no {persona!r} response (has {sorted(responses)})")
        ex = encode_example(
            tokenizer,
            row["messages"],
            responses[persona],
            max_len=max_len,
            system_prompt=system_prompt,
            example_id=row["id"],
        )
        if ex is None:
            skipped += 1
        else:
            examples.append(ex)
    if not examples:
        raise ValueError("no training examples fit in max_len")
    return examples, skipped


@lru_cache(maxsize=8)
def epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The example order of one epoch: a permutation that depends only on (seed, epoch), so a resumed run sees
    exactly the batches the uninterrupted run would have seen."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n, generator=gen).tolist())


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Indices of the examples in (0-based) optimizer step ``step``; epochs wrap around, the last partial batch of an
    epoch is filled from the next epoch so every batch has ``batch_size`` examples (when n >= batch_size)."""
    size = min(batch_size, n)
    start = step * size
    out = []
    for pos in range(start, start + size):
        epoch, offset = divmod(pos, n)
        out.append(epoch_order(n, seed, epoch)[offset])
    return out


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels (-100 on padding)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
