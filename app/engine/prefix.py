"""Prompt-prefix KV reuse: the keys/values of recently read prompts, kept per adapter, so a prompt that starts
with tokens the engine has already read (the system prompt every support-bot turn repeats, the conversation a
session re-sends each turn, a retried question) computes only the rest.

Why: the profile (docs/engine-profile.md) put a quarter of the engine's time at 16 streams into prefilling prompts,
and in chat traffic most of a prompt is a prefix some earlier prompt already had. Token-granular (not paged), so a
match needs no block alignment — `transformers serve` shares only whole 256-token pages, which short prompts never
fill. Keys depend on the adapter (LoRA on k/v changes them), so entries are per adapter and the engine drops them
all whenever an admin action touches the model.

Plain tensors, owned by the worker thread; no locking."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Entry:
    adapter: str | None
    ids: np.ndarray  # the prompt tokens whose keys/values are held
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer ([1, heads, len(ids), dim] keys, values)

    @property
    def tokens(self) -> int:
        return len(self.ids)


@dataclass
class Match:
    entry: Entry
    length: int  # leading prompt tokens whose keys/values come from the entry

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.entry.layers[index]
        return keys[:, :, : self.length], values[:, :, : self.length]


class PrefixCache:
    """LRU over whole entries, bounded by the tokens held (each token costs layers × 2 × kv-heads × dim floats)."""

    def __init__(self, max_tokens: int, min_match: int = 8):
        self.max_tokens = max_tokens
        self.min_match = min_match  # shorter matches are not worth the extra columns in the batch
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._next = 0
        self.tokens = 0

    @property
    def enabled(self) -> bool:
        return self.max_tokens > 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, adapter: str | None, prompt: list[int]) -> Match | None:
        """The longest held prefix of this prompt, leaving at least its last token to compute (for its logits)."""
        if not self._entries or len(prompt) <= self.min_match:
            return None
        ids = np.asarray(prompt, dtype=np.int64)
        best: tuple[int, int] | None = None
        for key, entry in self._entries.items():
            if entry.adapter != adapter:
                continue
            n = _common_prefix(entry.ids, ids, len(ids) - 1)
            if n >= self.min_match and (best is None or n > best[1]):
                best = (key, n)
        if best is None:
            return None
        self._entries.move_to_end(best[0])
        return Match(self._entries[best[0]], best[1])

    def store(self, adapter: str | None, prompt: list[int], layers: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
        """Hold one prompt's keys/values (tensors this cache may keep: copies, not views of a live batch). An entry
        that already covers the prompt makes this a no-op; entries the new one covers are dropped."""
        if not self.enabled or len(prompt) < self.min_match or len(prompt) > self.max_tokens:
            return False
        ids = np.asarray(prompt, dtype=np.int64)
        for key, entry in list(self._entries.items()):
            if entry.adapter != adapter:
                continue
            n = _common_prefix(entry.ids, ids, len(ids))
            if n == len(ids):  # held already (as this prompt or a longer one)
                self._entries.move_to_end(key)
                return False
            if n == entry.tokens:  # the new prompt extends this entry: keep only the longer one
                self._drop(key)
        self._entries[self._next] = Entry(adapter, ids, layers)
        self._next += 1
        self.tokens += len(ids)
        while self.tokens > self.max_tokens:
            self._drop(next(iter(self._entries)))
        return True

    def clear(self) -> None:
        self._entries.clear()
        self.tokens = 0

    def _drop(self, key: int) -> None:
        self.tokens -= self._entries.pop(key).tokens


def _common_prefix(a: np.ndarray, b: np.ndarray, limit: int) -> int:
    n = min(len(a), len(b), limit)
    if n <= 0:
        return 0
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n
