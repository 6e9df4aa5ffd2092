"""Prefill: rows join a lane. A prompt is read in one left-padded forward (reusing the keys/values of a cached
prefix where app/engine/prefix.py holds one) and its cache merged into the lane's; a row whose whole prompt but the
last token is cached joins without a forward of its own. Failures stay with their row: a failed batched prefill is
retried row by row, so the row that broke it fails alone and the others join."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from app.engine import kv
from app.engine.lanes import Lane, Row, row_error
from app.engine.prefix import PrefixCache
from app.engine.sampling import Pick, sample
from app.metrics import Metrics

log = logging.getLogger("tonewatch.engine")
Forward = Callable[[Lane, list[Row], torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]


class Prefill:
    def __init__(
        self,
        forward: Forward,
        prefix: PrefixCache,
        metrics: Metrics,
        *,
        device: str,
        pad_id: int,
        max_batch_size: int,
        set_threads: Callable[[int], None],
        accept: Callable[[Lane, int], None],
    ):
        self.forward = forward
        self.prefix = prefix
        self.metrics = metrics
        self.device = device
        self.pad_id = pad_id
        self.max_batch_size = max_batch_size
        self.set_threads = set_threads
        self.accept = accept  # hands the first sampled tokens to the new rows (Decode.accept)

    def admit(self, lane: Lane, rows: list[Row]) -> None:
        """Join `rows` to `lane`; a row that cannot be prefilled is failed alone."""
        # one prefix lookup per row, shared by the join and the prefill (nothing is stored in between)
        matches = [self.prefix.lookup(r.handle.request.adapter, r.handle.request.prompt_ids) for r in rows]
        rows, matches = self.join(lane, rows, matches)
        if not rows:
            return
        try:
            self.prefill(lane, rows, matches)
            return
        except Exception as exc:
            if len(rows) == 1:
                log.warning("prefill failed for request %s: %r", rows[0].handle.request.request_id, exc)
                rows[0].handle.fail(row_error(exc, "reading the prompt of"))
                return
        for row, match in zip(rows, matches, strict=True):  # find the row that broke the batch: the others join alone
            try:
                self.prefill(lane, [row], [match])
            except Exception as exc:
                log.warning("prefill failed for request %s: %r", row.handle.request.request_id, exc)
                row.handle.fail(row_error(exc, "reading the prompt of"))

    def join(self, lane: Lane, rows: list[Row], matches: list) -> tuple[list[Row], list]:
        """Rows whose whole prompt but its last token is held in the prefix cache join the lane without a forward
        of their own: their cached keys/values are merged in and their last prompt token is fed by the next decode
        step with everyone else's (whose logits give their first token). A prefill forward of one new token per row
        streams all the weights like a decode step does, so this saves one step per arrival wave. Returns the rows
        that still need a prefill, with their matches (all of them if joining fails)."""
        if not self.prefix.enabled:
            return rows, matches
        joining = [
            (r, m)
            for r, m in zip(rows, matches, strict=True)
            if m is not None and m.length == len(r.handle.request.prompt_ids) - 1
        ]
        if not joining:
            return rows, matches
        try:
            past = max(m.length for _, m in joining)
            cache = self.cache_for(lane, len(joining))
            kv.seed(cache, [m for _, m in joining], past)
            mask = torch.zeros((len(joining), past), dtype=torch.long, device=self.device)
            for i, (_, m) in enumerate(joining):
                mask[i, past - m.length :] = 1
            merge_into(lane, cache, mask)
        except Exception as exc:  # nothing joined: they take the prefill path
            log.warning("joining %d cached prompts failed (%r); prefilling them", len(joining), exc)
            return rows, matches
        for r, m in joining:
            prompt = r.handle.request.prompt_ids
            r.prompt_in_cache = m.length
            lane.rows.append(r)
            lane.next_tokens.append(Pick(prompt[-1]))
            self.metrics.prompt_tokens.labels(r.adapter_label).inc(len(prompt))
            self.metrics.prefix_reused_tokens.labels(r.adapter_label).inc(m.length)
        joined = {id(r) for r, _ in joining}
        rest = [(r, m) for r, m in zip(rows, matches, strict=True) if id(r) not in joined]
        return [r for r, _ in rest], [m for _, m in rest]

    def prefill(self, lane: Lane, rows: list[Row], matches: list) -> None:
        """Prefill rows and merge them into the lane. Changes nothing in the lane unless everything succeeded.

        Layout of row i (prefix reuse): [padding][the n_i reused prefix columns][padding][the new tokens], with
        `past` = max n_i columns seeded into the cache before the forward and the new tokens left-padded to a
        common width; the mask hides both paddings and positions count only real tokens, so a row reads exactly
        what a full prefill of its prompt would have. `matches`: each row's prefix-cache match (or None)."""
        prompts = [r.handle.request.prompt_ids for r in rows]
        reused = [m.length if m else 0 for m in matches]
        past = max(reused)
        width = max(len(p) - n for p, n in zip(prompts, reused, strict=True))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), past + width), dtype=torch.long)
        for i, (p, n) in enumerate(zip(prompts, reused, strict=True)):
            new = p[n:]
            ids[i, width - len(new) :] = torch.tensor(new, dtype=torch.long)
            mask[i, past - n : past] = 1
            mask[i, past + width - len(new) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
        self.set_threads(len(rows) * width)
        cache = self.cache_for(lane, len(rows))
        if past:
            kv.seed(cache, matches, past)
        logits = self.forward(lane, rows, ids, mask, position_ids, cache)
        tokens = sample(logits, [r.sampler for r in rows])
        for r, p, n in zip(rows, prompts, reused, strict=True):
            self.metrics.prompt_tokens.labels(r.adapter_label).inc(len(p))
            if n:
                self.metrics.prefix_reused_tokens.labels(r.adapter_label).inc(n)
        self.remember_prompts(rows, prompts, reused, tokens, cache, mask)
        merge_into(lane, cache, mask)
        lane.rows.extend(rows)
        lane.next_tokens.extend(tokens)
        self.accept(lane, len(lane.rows) - len(rows))

    def cache_for(self, lane: Lane, rows: int) -> kv.GrowingCache:
        # the lane's first rows keep this cache (room for a full batch); later ones are copied into the lane's
        return kv.GrowingCache(self.max_batch_size if lane.cache is None or not lane.rows else rows)

    def remember_prompts(self, rows, prompts, reused, tokens, cache: kv.GrowingCache, mask: torch.Tensor) -> None:
        """Keep the keys/values of prompts read in full (or mostly) for later prompts that start the same way."""
        if not self.prefix.enabled:
            return
        for i, (row, p, n) in enumerate(zip(rows, prompts, reused, strict=True)):
            if n >= len(p) - 1:
                continue  # (nearly) all of it came from an entry that is still held
            if isinstance(tokens[i], Exception):
                continue  # its logits were unusable (non-finite): so may its keys be; never hand them on
            self.prefix.store(row.handle.request.adapter, p, kv.row_columns(cache, i, mask[i]))
        self.metrics.prefix_cache_tokens.set(self.prefix.tokens)

    def remember_turn(self, lane: Lane, index: int) -> None:
        """Keep a finished row's prompt + reply: a session's next turn re-sends both, so it computes only the new
        message (when the chat template renders the reply as the same tokens, which it does up to the end marker)."""
        row = lane.rows[index]
        if not self.prefix.enabled or not row.fed or lane.cache is None or lane.mask is None:
            return
        prompt = row.handle.request.prompt_ids
        ids = list(prompt[: row.prompt_in_cache]) + row.fed
        if int(lane.mask[index].sum()) != len(ids):  # the cache does not hold exactly these tokens: keep nothing
            return
        self.prefix.store(row.handle.request.adapter, ids, kv.row_columns(lane.cache, index, lane.mask[index]))
        self.metrics.prefix_cache_tokens.set(self.prefix.tokens)


def merge_into(lane: Lane, cache: kv.GrowingCache, mask: torch.Tensor) -> None:
    if lane.cache is None or not lane.rows:
        lane.cache, lane.mask = cache, mask
    else:
        assert lane.mask is not None  # set together with the cache
        lane.cache, lane.mask = kv.merge(lane.cache, lane.mask, cache, mask)
