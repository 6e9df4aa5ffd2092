"""KV-cache surgery for continuous batching: rows leave (select), rows join (left-pad and concatenate),
and columns that every row has as padding are trimmed so the cache does not grow without bound."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer


def _pad_left(t: torch.Tensor, n: int) -> torch.Tensor:
    # t: [B, H, T, D] -> [B, H, T+n, D]
    return F.pad(t, (0, 0, n, 0)) if n > 0 else t


def select_rows(cache: DynamicCache, mask: torch.Tensor, keep: list[int]) -> torch.Tensor:
    index = torch.tensor(keep, dtype=torch.long, device=mask.device)
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, index)
        layer.values = layer.values.index_select(0, index)
    return trim_padding(cache, mask.index_select(0, index))


def trim_padding(cache: DynamicCache, mask: torch.Tensor) -> torch.Tensor:
    used = mask.any(dim=0)
    first = int(torch.nonzero(used)[0]) if bool(used.any()) else mask.shape[1]
    if first == 0:
        return mask
    for layer in cache.layers:
        layer.keys = layer.keys[:, :, first:, :]
        layer.values = layer.values[:, :, first:, :]
    return mask[:, first:]


def merge(
    cache_a: DynamicCache, mask_a: torch.Tensor, cache_b: DynamicCache, mask_b: torch.Tensor
) -> tuple[DynamicCache, torch.Tensor]:
    """Rows of b appended after rows of a; the shorter side is left-padded (masked) to the longer length."""
    len_a, len_b = mask_a.shape[1], mask_b.shape[1]
    width = max(len_a, len_b)
    for layer_a, layer_b in zip(cache_a.layers, cache_b.layers, strict=True):
        layer_a.keys = torch.cat([_pad_left(layer_a.keys, width - len_a), _pad_left(layer_b.keys, width - len_b)])
        layer_a.values = torch.cat([_pad_left(layer_a.values, width - len_a), _pad_left(layer_b.values, width - len_b)])
    mask = torch.cat([F.pad(mask_a, (width - len_a, 0)), F.pad(mask_b, (width - len_b, 0))])
    return cache_a, mask


def restore_length(cache: DynamicCache, length: int) -> None:
    """Undo a failed step: a forward that raised may have appended a column to some layers but not to others."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.shape[2] > length:
            layer.keys = layer.keys[:, :, :length, :]
            layer.values = layer.values[:, :, :length, :]


def row_copy(cache: DynamicCache, index: int) -> DynamicCache:
    """A one-row copy of the cache (to retry one row alone without touching the lane's cache)."""
    copy = DynamicCache()
    for layer_idx, layer in enumerate(cache.layers):
        copy.update(layer.keys[index : index + 1].clone(), layer.values[index : index + 1].clone(), layer_idx)
    return copy


class GrowingLayer(DynamicLayer):
    """A cache layer that appends in place: keys/values are views into a buffer with spare capacity, so a decode
    step writes one column instead of copying the whole cache (DynamicLayer's torch.cat is O(length) per step,
    O(length^2) over a generation). The batch surgery above reassigns `keys`/`values`; the next update notices and
    re-seeds the buffer from them (one copy per admission or departure, not per step)."""

    GROWTH = 64

    def __init__(self) -> None:
        super().__init__()
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self._length = 0

    def _seeded(self) -> bool:
        return (
            self._kbuf is not None
            and self.keys is not None
            and self.keys.shape[-2] == self._length
            and self.keys.data_ptr() == self._kbuf.data_ptr()
            and self.keys.shape[0] == self._kbuf.shape[0]
        )

    def _reserve(self, needed: int) -> None:
        current = self.keys if self.keys is not None and self.keys.numel() else None
        length = current.shape[-2] if current is not None else 0
        capacity = max(needed, length + self.GROWTH, int(needed * 1.5))
        shape = list(current.shape if current is not None else self._template.shape)
        shape[-2] = capacity
        kbuf = torch.empty(shape, dtype=self._template.dtype, device=self._template.device)
        vbuf = torch.empty(shape, dtype=self._template.dtype, device=self._template.device)
        if current is not None:
            kbuf[..., :length, :] = self.keys
            vbuf[..., :length, :] = self.values
        self._kbuf, self._vbuf, self._length = kbuf, vbuf, length

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._template = key_states
        n = key_states.shape[-2]
        if not self._seeded() or self._length + n > self._kbuf.shape[-2]:
            self._reserve((self.keys.shape[-2] if self.keys is not None and self.keys.numel() else 0) + n)
        end = self._length + n
        self._kbuf[..., self._length : end, :] = key_states
        self._vbuf[..., self._length : end, :] = value_states
        self._length = end
        self.keys = self._kbuf[..., :end, :]
        self.values = self._vbuf[..., :end, :]
        return self.keys, self.values


class GrowingCache(DynamicCache):
    """DynamicCache whose layers append in place (see GrowingLayer)."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=GrowingLayer)
