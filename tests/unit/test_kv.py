"""GrowingCache's in-place surgery gives exactly the tensors the plain concatenating DynamicCache path gives, over
random sequences of joins, departures, padding trims, decode steps and failed-step rollbacks."""

import random

import torch
from transformers import DynamicCache

from app.engine import kv

LAYERS, HEADS, DIM = 2, 3, 4


def prefill(cache_cls, rows: int, length: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    cache = cache_cls()
    for layer in range(LAYERS):
        k = torch.randn(rows, HEADS, length, DIM, generator=g)
        cache.update(k, k * 2 + 1, layer)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, : length // 3] = 0  # some left padding
    return cache, mask


def step(cache, mask, seed: int):
    g = torch.Generator().manual_seed(seed)
    for layer in range(LAYERS):
        k = torch.randn(mask.shape[0], HEADS, 1, DIM, generator=g)
        cache.update(k, k - 3, layer)
    return torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=mask.dtype)], 1)


def same(a, b, mask):
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert la.keys.shape == lb.keys.shape == (mask.shape[0], HEADS, mask.shape[1], DIM)
        live = mask.bool()[:, None, :, None].expand_as(la.keys)
        assert torch.equal(la.keys[live], lb.keys[live]) and torch.equal(la.values[live], lb.values[live])
        assert torch.isfinite(la.keys).all() and torch.isfinite(la.values).all()  # padding must stay finite


def test_growing_cache_surgery_matches_the_concatenating_path():
    rnd = random.Random(7)
    for trial in range(20):
        ref, mask = prefill(DynamicCache, 2, rnd.randint(2, 9), trial)
        grow, _ = prefill(lambda: kv.GrowingCache(4), 2, mask.shape[1], trial)
        for op in range(40):
            choice = rnd.random()
            seed = trial * 1000 + op
            if choice < 0.45:
                mask_ref = step(ref, mask, seed)
                step(grow, mask, seed)
                mask = mask_ref
            elif choice < 0.65 and mask.shape[0] < 7:
                length = rnd.randint(1, 20)
                new_ref, new_mask = prefill(DynamicCache, rnd.randint(1, 2), length, seed)
                new_grow, _ = prefill(lambda: kv.GrowingCache(2), new_mask.shape[0], length, seed)
                ref, merged = kv.merge(ref, mask, new_ref, new_mask)
                grow, _ = kv.merge(grow, mask, new_grow, new_mask)
                mask = merged
            elif choice < 0.85 and mask.shape[0] > 1:
                keep = sorted(rnd.sample(range(mask.shape[0]), rnd.randint(1, mask.shape[0] - 1)))
                mask_ref = kv.select_rows(ref, mask, keep)
                kv.select_rows(grow, mask, keep)
                mask = mask_ref
            else:  # a failed step: some layers got a column, then the lane is rolled back
                length = mask.shape[1]
                g = torch.Generator().manual_seed(seed)
                k = torch.randn(mask.shape[0], HEADS, 1, DIM, generator=g)
                ref.update(k, k, 0)
                grow.update(k, k, 0)
                kv.restore_length(ref, length)
                kv.restore_length(grow, length)
            same(ref, grow, mask)
