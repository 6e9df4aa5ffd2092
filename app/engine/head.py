"""The output head (lm_head) on a CPU, fp32: one oneDNN-reordered copy of its weight, used at every batch size.

The head is the largest single matmul of a decode step (49152 × 576 on the bundled model, 21% of the weights) and
MKL's fp32 GEMM handles it badly from four rows up: measured here 6.2 / 10.1 / 14.4 / 9.8 ms at 4 / 8 / 12 / 16 rows
against 3.6 / 4.7 / 5.3 / 7.1 ms for oneDNN on a weight reordered once into its blocked layout (a little faster at 3
rows, no faster at 1–2, where MKL's matrix-vector path stays in use; results within 1.3e-4 of MKL's on logits of
magnitude ~20). The layer matmuls gain nothing from the same change (up to 1.8x slower at 1–3 rows), so only the
head gets it. Cost: one copy of the head's weight (113 MB here; the dense weight stays, tied to the embeddings). The
copy belongs to that weight: if the weight tensor is replaced or written in place, forward falls back to the plain
matmul, and copies of the module (PEFT's modules_to_save) are plain.

Those figures are one Xeon's (AVX-512). Whether oneDNN wins, and from how many rows, depends on the CPU, so `apply`
times both kernels on the real weight at start-up (`probe`, well under a second) and keeps the reordered copy only
from the row count where it measures faster at every probed size; where it never does, the head stays plain and
the 113 MB copy is not made."""

from __future__ import annotations

import copy
import logging
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("tonewatch.engine")
# below this, MKL's matrix-vector path is as fast or faster (a whole step: 51.8 vs 51.5 ms at 1 row, 53.4 vs 51.6 at 2)
MIN_ROWS = 3
PROBE_ROWS = (2, 3, 4, 8, 16)  # decode steps' row counts whose head matmul is timed at start-up
WIN = 1.05  # oneDNN must be this much faster to be worth its copy of the weight
PROBE_REPEATS = 5


class ReorderedHead(nn.Linear):
    """An nn.Linear (PEFT and the adapter checks see a plain linear) whose forward reads a reordered weight copy."""

    def __init__(self, source: nn.Linear, min_rows: int = MIN_ROWS):
        nn.Module.__init__(self)
        self.min_rows = min_rows  # fewer rows than this take MKL's path (see probe)
        self.in_features, self.out_features = source.in_features, source.out_features
        self.weight = source.weight  # the same Parameter: still tied to the input embeddings
        self.bias = source.bias
        with torch.no_grad():
            self._reordered = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), 16)
        self._stamp = self._weight_stamp()

    def _weight_stamp(self) -> tuple[int, int]:
        return self.weight.data_ptr(), self.weight._version

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._reordered is None or (torch.is_grad_enabled() and self.weight.requires_grad):
            return F.linear(x, self.weight, self.bias)
        if self._weight_stamp() != self._stamp:  # someone changed the weight: the copy is stale, drop it
            log.warning("output head weight changed; the reordered copy is dropped")
            self._reordered = None
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] < self.min_rows:
            return F.linear(x, self.weight, self.bias)
        out = torch.ops.mkldnn._linear_pointwise(flat, self._reordered, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)

    def __deepcopy__(self, memo: dict) -> nn.Linear:
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        plain.weight = copy.deepcopy(self.weight, memo)
        if self.bias is not None:
            plain.bias = copy.deepcopy(self.bias, memo)
        return plain


def probe(head: ReorderedHead, rows: tuple[int, ...] = PROBE_ROWS) -> dict[int, tuple[float, float]]:
    """Median seconds of the head matmul per row count: (MKL on the plain weight, oneDNN on the reordered copy),
    interleaved so a burst of other load hits both. Runs on the calling thread's torch threads."""
    timings: dict[int, tuple[float, float]] = {}
    with torch.no_grad():
        for n in rows:
            x = torch.randn(n, head.in_features)
            plain: list[float] = []
            reordered: list[float] = []
            for i in range(PROBE_REPEATS + 1):  # the first pair warms up
                start = time.perf_counter()
                F.linear(x, head.weight, head.bias)
                middle = time.perf_counter()
                torch.ops.mkldnn._linear_pointwise(x, head._reordered, head.bias, "none", [], "")
                end = time.perf_counter()
                if i:
                    plain.append(middle - start)
                    reordered.append(end - middle)
            timings[n] = (statistics.median(plain), statistics.median(reordered))
    return timings


def min_rows_from(timings: dict[int, tuple[float, float]], win: float = WIN) -> int | None:
    """The smallest probed row count from which oneDNN beats MKL by `win` at every larger one; None: it never does."""
    chosen = None
    for n in sorted(timings, reverse=True):
        plain, reordered = timings[n]
        if plain < win * reordered:
            break
        chosen = n
    return chosen


def apply(
    model: nn.Module, device: str, enabled: bool = True, choices: dict[str, str] | None = None, measure: bool = True
) -> nn.Module:
    """Give a CPU fp32 model the reordered head from the row count where it measures faster on this CPU (`measure`;
    else from MIN_ROWS); anything else (GPU, half precision, a packed head) is left alone. The decision goes into
    `choices` (see app.engine.cpu)."""
    choices = {} if choices is None else choices
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not enabled:
        choices["output_head"] = "plain (TONEWATCH_REORDER_HEAD=false)"
        return model
    if not device.startswith("cpu") or type(head) is not nn.Linear:
        return model
    if head.weight.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return model
    try:
        reordered = ReorderedHead(head)
    except Exception as exc:  # an oneDNN build that cannot reorder this weight: keep the plain head
        log.warning("output head not reordered (%r)", exc)
        choices["output_head"] = "plain (oneDNN cannot reorder it)"
        return model
    if measure:
        timings = probe(reordered)
        figures = ", ".join(f"{n} rows {a * 1e3:.2f}/{b * 1e3:.2f} ms" for n, (a, b) in timings.items())
        log.info("output head matmul, MKL/oneDNN: %s", figures)
        min_rows = min_rows_from(timings)
        if min_rows is None:
            choices["output_head"] = "plain (oneDNN not faster on this CPU)"
            return model
        reordered.min_rows = max(min_rows, 1)
    # a transformers model's method; nn.Module types any attribute as Tensor | Module
    model.set_output_embeddings(reordered)  # type: ignore[operator]
    choices["output_head"] = f"oneDNN-reordered from {reordered.min_rows} rows"
    return model
