"""KV-cache surgery for continuous batching: rows leave (select), rows join (left-pad and concatenate),
and columns that every row has as padding are trimmed so the cache does not grow without bound."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache


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
