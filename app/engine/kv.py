"""KV-cache surgery for continuous batching: rows leave (select), rows join (left-pad and concatenate),
and columns that every row has as padding are trimmed so the cache does not grow without bound."""

from __future__ import annotations

from typing import Protocol, cast

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer


class _Filled(Protocol):
    """A layer of a filled attention cache: keys/values [B, H, T, D]."""

    keys: torch.Tensor
    values: torch.Tensor


def _layers(cache: Cache) -> list[_Filled]:
    # transformers types a cache's layers as any layer kind (linear-attention ones too) with Optional keys; the
    # engine's caches hold DynamicLayers / GrowingLayers, filled by the prefill before any surgery
    return cast("list[_Filled]", cache.layers)


def _pad_left(t: torch.Tensor, n: int) -> torch.Tensor:
    # t: [B, H, T, D] -> [B, H, T+n, D]
    return F.pad(t, (0, 0, n, 0)) if n > 0 else t


def select_rows(cache: DynamicCache, mask: torch.Tensor, keep: list[int]) -> torch.Tensor:
    index = torch.tensor(keep, dtype=torch.long, device=mask.device)
    for layer in _layers(cache):
        if isinstance(layer, GrowingLayer):
            layer.keep_rows(keep)
        else:
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
    return trim_padding(cache, mask.index_select(0, index))


def trim_padding(cache: DynamicCache, mask: torch.Tensor) -> torch.Tensor:
    used = mask.any(dim=0)
    first = int(torch.nonzero(used)[0]) if bool(used.any()) else mask.shape[1]
    if first == 0:
        return mask
    for layer in _layers(cache):
        if isinstance(layer, GrowingLayer):
            layer.drop_front(first)
        else:
            layer.keys = layer.keys[:, :, first:, :]
            layer.values = layer.values[:, :, first:, :]
    return mask[:, first:]


def merge(
    cache_a: DynamicCache, mask_a: torch.Tensor, cache_b: DynamicCache, mask_b: torch.Tensor
) -> tuple[DynamicCache, torch.Tensor]:
    """Rows of b appended after rows of a; the shorter side is left-padded (masked) to the longer length."""
    len_a, len_b = mask_a.shape[1], mask_b.shape[1]
    width = max(len_a, len_b)
    for layer_a, layer_b in zip(_layers(cache_a), _layers(cache_b), strict=True):
        if isinstance(layer_a, GrowingLayer):
            layer_a.append_rows(layer_b.keys, layer_b.values)
            continue
        layer_a.keys = torch.cat([_pad_left(layer_a.keys, width - len_a), _pad_left(layer_b.keys, width - len_b)])
        layer_a.values = torch.cat([_pad_left(layer_a.values, width - len_a), _pad_left(layer_b.values, width - len_b)])
    mask = torch.cat([F.pad(mask_a, (width - len_a, 0)), F.pad(mask_b, (width - len_b, 0))])
    return cache_a, mask


def restore_length(cache: DynamicCache, length: int) -> None:
    """Undo a failed step: a forward that raised may have appended a column to some layers but not to others."""
    for layer in _layers(cache):
        if isinstance(layer, GrowingLayer):
            layer.truncate(length)
        elif getattr(layer, "keys", None) is not None and layer.keys.shape[2] > length:
            layer.keys = layer.keys[:, :, :length, :]
            layer.values = layer.values[:, :, :length, :]


def row_copy(cache: DynamicCache, index: int) -> DynamicCache:
    """A one-row copy of the cache (to retry one row alone without touching the lane's cache)."""
    copy = DynamicCache()
    for layer_idx, layer in enumerate(_layers(cache)):
        copy.update(layer.keys[index : index + 1].clone(), layer.values[index : index + 1].clone(), layer_idx)
    return copy


def seed(cache: DynamicCache, matches: list, past: int) -> None:
    """Fill an empty cache with `past` columns per row: row i's reused prefix (matches[i], a prefix.Match, or None)
    right-aligned, zeros (masked) before it and for rows that reuse nothing."""
    first = next(m for m in matches if m is not None)
    for index in range(len(first.entry.layers)):
        keys0, values0 = first.layer(index)
        shape = (len(matches), keys0.shape[1], past)
        keys = keys0.new_zeros((*shape, keys0.shape[-1]))
        values = values0.new_zeros((*shape, values0.shape[-1]))
        for row, match in enumerate(matches):
            if match is not None:
                k, v = match.layer(index)
                keys[row, :, past - match.length :] = k[0]
                values[row, :, past - match.length :] = v[0]
        cache.update(keys, values, index)


def row_columns(cache: DynamicCache, row: int, mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One row's real (unmasked) columns of every layer, as fresh [1, heads, n, dim] tensors."""
    columns = torch.nonzero(mask, as_tuple=True)[0]
    return [
        (layer.keys[row : row + 1].index_select(2, columns), layer.values[row : row + 1].index_select(2, columns))
        for layer in _layers(cache)
    ]


class GrowingLayer(DynamicLayer):
    """A cache layer whose keys/values are views into buffers with spare rows and columns, so the batch surgery
    and each decode step touch only what changes:

    * a decode step writes one column in place (DynamicLayer's torch.cat copies the whole cache every step);
    * rows leaving are compacted in place (only rows after the first leaver move), leading padding is trimmed by
      moving a start offset (no copy);
    * rows joining are written into spare rows, and the running rows are left-padded by moving the start offset
      back and zeroing those columns (the running rows' cache is not copied).

    A buffer is reallocated (one copy) only when it runs out of rows or columns. Code that reassigns `keys` /
    `values` itself (transformers' own cache methods) is noticed: the next update adopts the new tensors."""

    GROWTH = 64

    def __init__(self, rows: int = 1) -> None:
        super().__init__()
        self.row_capacity = rows
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._b = self._start = self._end = 0
        self._kview: torch.Tensor | None = None

    # ---- buffer bookkeeping ---------------------------------------------------------------------------------
    def _buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The key and value buffers (the first _adopt allocates them)."""
        assert self._k is not None and self._v is not None
        return self._k, self._v

    def _live(self) -> tuple[torch.Tensor, torch.Tensor]:
        """keys/values as they are now: our views, or tensors transformers' own cache methods assigned."""
        assert self.keys is not None and self.values is not None
        return self.keys, self.values

    def _sync(self) -> None:
        k, v = self._buffers()
        self.keys = self._kview = k[: self._b, :, self._start : self._end, :]
        self.values = v[: self._b, :, self._start : self._end, :]

    def _owned(self) -> bool:
        return self._k is not None and self.keys is self._kview

    def _adopt(self, keys: torch.Tensor, values: torch.Tensor, front: int = 0, back: int = 0, rows: int = 0) -> None:
        """Copy live tensors into fresh buffers with `front`/`back` spare columns and room for `rows` rows."""
        b, h, t, d = keys.shape
        cap_b = max(b, rows, self.row_capacity)
        cap_t = front + t + max(back, self.GROWTH, t // 2)
        # empty, not zeros: nothing outside the live view is ever read, and padding joining it is zeroed explicitly
        self._k = k = keys.new_empty((cap_b, h, cap_t, d))
        self._v = v = values.new_empty((cap_b, h, cap_t, values.shape[-1]))
        k[:b, :, front : front + t] = keys
        v[:b, :, front : front + t] = values
        self._b, self._start, self._end = b, front, front + t
        self._sync()

    # ---- transformers' Cache API ----------------------------------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if not self._owned() or self._b != key_states.shape[0]:
            if self.keys is not None and self.keys.numel():
                self._adopt(*self._live(), back=n)
            else:
                self._adopt(key_states[:, :, :0], value_states[:, :, :0], back=n)
        k, v = self._buffers()
        if self._end + n > k.shape[2]:
            self._adopt(*self._live(), back=n)
            k, v = self._buffers()
        k[: self._b, :, self._end : self._end + n] = key_states
        v[: self._b, :, self._end : self._end + n] = value_states
        self._end += n
        self._sync()
        return self.keys, self.values

    # ---- batch surgery (kv.select_rows / trim_padding / merge / restore_length call these) ------------------
    def keep_rows(self, keep: list[int]) -> None:
        if not self._owned():
            self._adopt(*self._live())
        k, v = self._buffers()
        for new, old in enumerate(keep):  # ascending: a row only ever moves onto a slot already read or freed
            if new != old:
                k[new, :, self._start : self._end] = k[old, :, self._start : self._end]
                v[new, :, self._start : self._end] = v[old, :, self._start : self._end]
        self._b = len(keep)
        self._sync()

    def drop_front(self, n: int) -> None:
        if not self._owned():
            self._adopt(*self._live())
        self._start += n
        self._sync()

    def truncate(self, length: int) -> None:
        if self._owned():
            self._end = min(self._end, self._start + length)
            self._sync()
        elif self.keys is not None and self.keys.shape[2] > length:
            keys, values = self._live()
            self.keys, self.values = keys[:, :, :length], values[:, :, :length]

    def append_rows(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Rows of another cache join after these; the shorter side is left-padded with zeros (masked)."""
        if not self._owned():
            self._adopt(*self._live())
        length, joining = self._end - self._start, keys.shape[2]
        width = max(length, joining)
        grow = width - length
        if grow > self._start or self._b + keys.shape[0] > self._buffers()[0].shape[0]:
            self._adopt(*self._live(), front=grow, rows=self._b + keys.shape[0])
        k, v = self._buffers()
        if grow:
            self._start -= grow
            k[: self._b, :, self._start : self._start + grow] = 0
            v[: self._b, :, self._start : self._start + grow] = 0
        rows = slice(self._b, self._b + keys.shape[0])
        k[rows, :, self._start : self._end - joining] = 0
        v[rows, :, self._start : self._end - joining] = 0
        k[rows, :, self._end - joining : self._end] = keys
        v[rows, :, self._end - joining : self._end] = values
        self._b += keys.shape[0]
        self._sync()


class GrowingCache(DynamicCache):
    """DynamicCache whose layers are GrowingLayers with room for `rows` rows (the engine's batch size)."""

    def __init__(self, rows: int = 1) -> None:
        # transformers only calls it to make each layer, so a factory serves as well as a class
        Cache.__init__(self, layer_class_to_replicate=lambda: GrowingLayer(rows))  # type: ignore[arg-type]
