"""Decode: one token for every row of a lane per step, handed to the rows (text, stops, max_tokens, EOS), with
fault isolation. A failed step is undone (KV cache cropped back) and each row's forward is tried alone to find the
culprit; the culprits fail, the others retry the step. A failure no single row reproduces is retried LANE_RETRIES
times before the lane fails (never another lane)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import cast

import torch

from app.engine import kv
from app.engine.events import DoneEvent, Outbox, TokenEvent
from app.engine.lanes import Lane, Row, row_error
from app.engine.prefill import Forward
from app.engine.sampling import Pick, sample
from app.errors import Cancelled
from app.metrics import Metrics

log = logging.getLogger("tonewatch.engine")
LANE_RETRIES = 1


class Decode:
    def __init__(
        self,
        forward: Forward,
        metrics: Metrics,
        outbox: Outbox,
        *,
        device: str,
        eos_ids: set[int],
        on_finished: Callable[[float], None],
        remember_turn: Callable[[Lane, int], None],
    ):
        self.forward = forward
        self.metrics = metrics
        self.outbox = outbox
        self.device = device
        self.eos_ids = eos_ids
        self.on_finished = on_finished  # a row's completion time (Retry-After's drain rate)
        self.remember_turn = remember_turn  # a finished row's prompt + reply for the prefix cache
        self.steps = 0

    def step(self, lane: Lane) -> None:
        """One decode step of the lane; a failure is isolated to the rows that cause it."""
        assert lane.cache is not None and lane.mask is not None
        length, mask = lane.mask.shape[1], lane.mask
        try:
            self.decode(lane)
            lane.failures = 0
            return
        except Exception as exc:
            kv.restore_length(lane.cache, length)
            lane.mask = mask
            error = exc
        log.warning("decode step failed for a lane of %d rows (%r); isolating", len(lane.rows), error)
        culprits = [i for i in range(len(lane.rows)) if not self.decodes_alone(lane, i)]
        for i in culprits:
            lane.rows[i].handle.fail(row_error(error, "generating"))
        if culprits:
            lane.remove(culprits)  # the others retry the step on the next iteration
            return
        lane.failures += 1
        if lane.failures > LANE_RETRIES:
            for row in lane.rows:
                row.handle.fail(row_error(error, "generating"))
            lane.remove(list(range(len(lane.rows))))

    def decodes_alone(self, lane: Lane, index: int) -> bool:
        """Try one decode step's forward for one row on a copy of its cache (nothing in the lane changes;
        sampling is not repeated: its failures are per row already)."""
        assert lane.cache is not None and lane.mask is not None
        pick = lane.next_tokens[index]
        if isinstance(pick, Exception):
            return False
        row = lane.rows[index]
        ones = torch.ones((1, 1), dtype=lane.mask.dtype, device=self.device)
        mask = torch.cat([lane.mask[index : index + 1], ones], 1)
        ids = torch.tensor([[pick.token]], dtype=torch.long, device=self.device)
        positions = lane.mask[index : index + 1].sum(-1, keepdim=True)
        try:
            logits = self.forward(lane, [row], ids, mask, positions, kv.row_copy(lane.cache, index))
        except Exception:
            return False
        return bool(torch.isfinite(logits).all())

    def decode(self, lane: Lane) -> None:
        assert lane.cache is not None and lane.mask is not None
        rows = lane.rows
        picks = cast("list[Pick]", lane.next_tokens)  # accept() removed the rows whose sampling failed
        ids = torch.tensor([p.token for p in picks], dtype=torch.long, device=self.device).unsqueeze(1)
        position_ids = lane.mask.sum(-1, keepdim=True)
        mask = torch.cat([lane.mask, torch.ones((len(rows), 1), dtype=lane.mask.dtype, device=self.device)], 1)
        logits = self.forward(lane, rows, ids, mask, position_ids, lane.cache)
        tokens = sample(logits, [r.sampler for r in rows])
        lane.mask = mask
        for row, pick in zip(rows, picks, strict=True):
            row.fed.append(pick.token)
        self.metrics.batch_size.observe(len(rows))
        self.steps += 1
        lane.next_tokens = tokens
        self.accept(lane, 0)

    def accept(self, lane: Lane, start: int) -> None:
        """Hand tokens lane.next_tokens[start:] to their rows; finish rows that hit EOS, a stop or max_tokens."""
        now = time.monotonic()
        finished: list[int] = []
        for i in range(start, len(lane.rows)):
            row, pick = lane.rows[i], lane.next_tokens[i]
            if row.handle.cancelled:
                row.handle.fail(Cancelled("client went away"))
                finished.append(i)
                continue
            if isinstance(pick, Exception):
                log.warning("sampling failed for request %s: %r", row.handle.request.request_id, pick)
                row.handle.fail(row_error(pick, "sampling a token for"))
                finished.append(i)
                continue
            try:
                if self.take_token(row, pick, now):
                    finished.append(i)
                    self.remember_turn(lane, i)
            except Exception as exc:  # detokenising or a stop check failed: this row only
                row.handle.fail(row_error(exc, "decoding the text of"))
                finished.append(i)
        if finished:
            lane.remove(finished)
        self.outbox.flush()  # this step's tokens go out now, not after the other lanes' steps

    def take_token(self, row: Row, pick: Pick, now: float) -> bool:
        """Add one token to a row; True when the row is finished."""
        token = pick.token
        if token in self.eos_ids:
            self.finish(row, "stop", now)
            return True
        row.sampler.accept(token)
        if pick.logprob is not None:
            row.pending_logprobs.append(pick)
        row.n_generated += 1
        self.metrics.generated_tokens.labels(row.adapter_label).inc()
        if row.n_generated == 1:
            row.first_token = now
            self.metrics.ttft.labels(row.adapter_label).observe(now - row.handle.created)
        else:
            self.metrics.inter_token.labels(row.adapter_label).observe(now - row.last_token)
        row.last_token = now
        delta = row.assembler.add(token)
        if delta and row.handle.request.emit_text:
            row.handle.emit(TokenEvent(delta, row.take_logprobs()))
        if row.assembler.stopped or row.sampler.grammar_done:
            self.finish(row, "stop", now)
            return True
        if row.n_generated >= row.handle.request.params.max_tokens:
            self.finish(row, "length", now)
            return True
        return False

    def finish(self, row: Row, reason: str, now: float) -> None:
        tail = row.assembler.finish() if not row.assembler.stopped else ""
        if (tail or row.pending_logprobs) and row.handle.request.emit_text:
            row.handle.emit(TokenEvent(tail, row.take_logprobs()))
        created = row.handle.created
        row.handle.emit(
            DoneEvent(
                text=row.assembler.text,
                finish_reason=reason,
                prompt_tokens=len(row.handle.request.prompt_ids),
                completion_tokens=row.n_generated,
                queue_s=row.admitted - created,
                ttft_s=(row.first_token or now) - created,
                total_s=now - created,
                request_id=row.handle.request.request_id,
            )
        )
        self.on_finished(now)
