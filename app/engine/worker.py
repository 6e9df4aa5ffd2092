"""The one worker thread that owns the model: a continuous-batching decode loop.

Requests wait in a bounded queue; the worker admits them into a running batch between decode steps (left-padded
prefill, then a KV-cache merge), decodes one token for every row per step, and drops rows the moment they finish or
their client goes away. Rows whose adapters PEFT can mix share a lane (one forward with `adapter_names`); adapters
that cannot be mixed (DoRA, ...) get a lane of their own. Admin work that mutates the model (installing adapters)
runs between steps via `call()`, so no forward ever sees a half-installed adapter.

Fault isolation: every submitted request gets exactly one terminal event (DoneEvent or ErrorEvent), always. A row
that fails while being admitted, prefilled, sampled or decoded fails alone: a failed batched prefill is retried row
by row, a failed decode step is undone (KV cache cropped back) and each row is tried alone to find the culprit,
and the others go on. Only a failure that no single row reproduces fails its lane (never other lanes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from transformers import DynamicCache

from app.engine import fastpath, kv, peft_install
from app.engine.adapter_files import AdapterSpec
from app.engine.events import DoneEvent, GenerationRequest, Outbox, RequestHandle, TokenEvent
from app.engine.plain import base_view
from app.engine.prefix import PrefixCache
from app.engine.sampling import Pick, RowSampler, sample
from app.engine.text import TextAssembler
from app.engine.threads import lean_decode_wins, wide_from
from app.errors import Cancelled, EngineUnavailable, GenerationFailed, ModelNotFound, QueueFull, QueueTimeout
from app.metrics import Metrics
from app.system import usable_cores

log = logging.getLogger("tonewatch.engine")
BASE = "__base__"  # PEFT's name for "no adapter" in adapter_names
AUTO_WIDE_ROWS = 8  # from this many rows in a forward, auto threads use every core (see Engine._set_threads)
MIXED_LANE = "__mixed__"
# A decode failure that no row reproduces alone is retried this many times before its lane is failed.
LANE_RETRIES = 1


@dataclass
class _Row:
    handle: RequestHandle
    assembler: TextAssembler
    sampler: RowSampler
    admitted: float
    first_token: float = 0.0
    last_token: float = 0.0
    n_generated: int = 0
    pending_logprobs: list[dict] = field(default_factory=list)
    fed: list[int] = field(default_factory=list)  # tokens fed to decode steps: their keys/values are cached
    prompt_in_cache: int | None = None  # prompt tokens cached before decoding (None: all; see Engine._join)

    @property
    def adapter_label(self) -> str:
        return self.handle.request.adapter or "base"


class _Lane:
    def __init__(self, key: str):
        self.key = key
        self.rows: list[_Row] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None
        self.next_tokens: list[Pick | Exception] = []
        self.failures = 0


def _row_error(exc: Exception, stage: str) -> Exception:
    if isinstance(exc, EngineUnavailable | GenerationFailed | ModelNotFound):
        return exc
    return GenerationFailed(
        f"generation failed while {stage} this request ({type(exc).__name__}); other requests were not affected"
    )


class Engine:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: str,
        metrics: Metrics,
        max_batch_size: int = 16,
        max_wait_ms: float = 10.0,
        max_queue: int = 256,
        request_timeout_s: float = 60.0,
        threads: int = 0,
        prefix_cache_mb: float = 0.0,
    ):
        self.model = model
        self._base = base_view(model)  # the base weights without PEFT's wrappers, for base-only steps
        # decode steps skip transformers' per-call machinery where it can and, on a CPU, where it measures faster
        self._fast_decode = fastpath.supports(model)
        self.choices: dict[str, str] = {}  # what start-up measured and chose (shown in /readyz; app/engine/cpu.py)
        self.threads = threads  # torch threads of this worker's forwards (a per-thread setting); 0: auto
        self.tokenizer = tokenizer
        self.device = device
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.request_timeout_s = request_timeout_s
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        # adapters PEFT cannot run inside a mixed batch (changed only by install/remove_adapter, on this thread)
        self.unmixable: set[str] = set()
        self.adapters_present: set[str] = set()  # installed in the model; changed only on this thread
        self.peft_active = False
        self._threads_now = 0
        self._cores = 1
        self.wide_from = AUTO_WIDE_ROWS  # decode steps of this many rows use every core (see app/engine/threads.py)
        self._peft_mode: tuple | None = None  # what PEFT was last pointed at (see _route_adapters); None: unknown
        self._pending: deque[RequestHandle] = deque()
        self._admitting: list[RequestHandle] = []
        self._control: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._cv = threading.Condition()
        self._lanes: dict[str, _Lane] = {}
        self._running = False
        self._thread: threading.Thread | None = None
        self._round_robin = itertools.count()
        self._finished_at: deque[float] = deque(maxlen=64)  # completion times, for Retry-After
        self._outbox = Outbox()
        self.steps = 0
        # prompt prefixes already read, per adapter (see app/engine/prefix.py); 0 MB turns reuse off
        self.prefix = PrefixCache(int(prefix_cache_mb * 2**20 // _kv_bytes_per_token(model)))

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker and return once it is ready. With auto threads it first times a few decode steps (under a
        second on the bundled model) on its own thread — torch's thread pool belongs to the thread that runs the
        forwards — before any request can wait on it."""
        self._running = True
        ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(ready,), name="tonewatch-engine", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self) -> None:
        with self._cv:
            self._running = False
            self._cv.notify_all()
        if self._thread:
            self._thread.join(timeout=30)
        with self._cv:
            pending, self._pending = list(self._pending), deque()
        for handle in pending:
            handle.fail(EngineUnavailable("server is shutting down"))

    @property
    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def active_rows(self) -> int:
        return sum(len(lane.rows) for lane in self._lanes.values())

    def retry_after_s(self) -> float:
        """How long the queue ahead of a new request takes to drain, from the recent completion rate."""
        now = time.monotonic()
        done = [t for t in list(self._finished_at) if now - t < 120]
        if len(done) >= 2 and now > done[0]:
            rate = len(done) / (now - done[0])
            return min(120.0, max(1.0, len(self._pending) / rate))
        return max(1.0, self.max_wait_s + 1.0)

    # ---- API for the event loop -------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> RequestHandle:
        loop = asyncio.get_running_loop()
        handle = RequestHandle(request, loop, asyncio.Queue(), outbox=self._outbox)
        with self._cv:
            if not self._running:
                raise EngineUnavailable("engine is not running")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(
                    f"server queue is full ({self.max_queue} waiting); retry after the Retry-After delay",
                    retry_after_s=self.retry_after_s(),
                )
            self._pending.append(handle)
            self.metrics.queue_depth.set(len(self._pending))
            self._cv.notify_all()
        return handle

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run fn on the worker thread between decode steps (for anything that mutates the model)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cv:
            if not self._running:
                future.set_exception(EngineUnavailable("engine is not running"))
                return future
            self._control.append((fn, future))
            self._cv.notify_all()
        return future

    # ---- adapters: the model and its routing state change only on the worker thread --------------------------
    def install_adapter(self, spec: AdapterSpec) -> concurrent.futures.Future:
        """Add a validated adapter to the model between decode steps; the future holds its parameter count. On
        failure the model is as it was and the future holds the error."""
        return self.call(lambda: self._install_adapter(spec))

    def remove_adapter(self, name: str) -> concurrent.futures.Future:
        """Remove an adapter (no request may be using it) between decode steps; the last one's removal restores the
        plain base model."""
        return self.call(lambda: self._remove_adapter(name))

    def _install_adapter(self, spec: AdapterSpec) -> int:
        self.model, count = peft_install.install(self.model, spec, self.device)
        self.peft_active = True
        self.adapters_present.add(spec.name)
        if not spec.mixable:
            self.unmixable.add(spec.name)
        return count

    def _remove_adapter(self, name: str) -> None:
        # A request routed to the adapter just before its unload began, but submitted after the registry saw no rows
        # for it, may have been admitted since: it gets the answer any later request gets (404, the adapter is gone),
        # never a failed decode step for its whole lane.
        for lane in list(self._lanes.values()):
            late = [i for i, row in enumerate(lane.rows) if row.handle.request.adapter == name]
            for i in late:
                lane.rows[i].handle.fail(ModelNotFound(f"model {name!r} was unloaded", param="model"))
            if late:
                self._remove(lane, late)
        self.adapters_present.discard(name)
        self.unmixable.discard(name)
        self.model, self.peft_active = peft_install.remove(self.model, name)

    def rows_for_adapter(self, adapter: str) -> int:
        """Queued plus running requests for an adapter (read from any thread; a snapshot)."""
        pending = sum(1 for h in list(self._pending) if h.request.adapter == adapter)
        admitting = sum(1 for h in list(self._admitting) if h.request.adapter == adapter)
        running = sum(
            1 for lane in list(self._lanes.values()) for r in list(lane.rows) if r.handle.request.adapter == adapter
        )
        return pending + admitting + running

    # ---- the worker -----------------------------------------------------------------------------------------
    def _loop(self, ready: threading.Event) -> None:
        torch.set_grad_enabled(False)
        self._cores = usable_cores()
        try:
            self._probe()
        finally:
            ready.set()
        self._set_threads(1)
        self._outbox.owner = threading.get_ident()
        try:
            self._serve()
        finally:
            self._outbox.flush()

    def _probe(self) -> None:
        """Start-up measurements on this CPU: decode threads, then the lean forward on the threads a 1-row step
        gets. Each keeps its safe default when it cannot measure."""
        if not self.threads:
            self.wide_from = wide_from(
                self.model, device=self.device, cores=self._cores, pad_id=self.pad_id, default=AUTO_WIDE_ROWS
            )
            self.choices["decode_threads"] = f"{self._cores} from {self.wide_from} rows, else {max(1, self._cores - 1)}"
        else:
            self.choices["decode_threads"] = f"{self.threads} (TONEWATCH_ENGINE_THREADS)"
        if self._fast_decode and self.device.startswith("cpu"):
            one_row = self.threads or (self._cores if self.wide_from <= 1 else max(1, self._cores - 1))
            self._fast_decode = lean_decode_wins(self.model, pad_id=self.pad_id, threads=one_row)
            self.choices["lean_decode"] = "on (measured faster)" if self._fast_decode else "off (not faster here)"
        else:
            self.choices["lean_decode"] = "on" if self._fast_decode else "off (model not supported)"

    def _serve(self) -> None:
        while True:
            with self._cv:
                while self._running and not self._pending and not self._control and not self.active_rows:
                    self._cv.wait(timeout=0.5)
                if not self._running:
                    break
            try:
                self._run_control()
                self._admit()
                self._step_lanes()
            except Exception as exc:  # a bug, not a row's fault: fail what is in flight, keep serving
                log.exception("engine step failed unexpectedly")
                self._fail_in_flight(exc)
            finally:
                self._outbox.flush()
        self._fail_in_flight(EngineUnavailable("server is shutting down"))

    def _run_control(self) -> None:
        while self._control:
            fn, future = self._control.popleft()
            self._peft_mode = None  # control work may add, remove or activate adapters
            self.prefix.clear()  # ... and keys read under an adapter that changed must not be reused
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

    def _take_pending(self) -> list[RequestHandle]:
        """Pop what fits into the batch; when idle, first wait up to max_wait for the batch to fill."""
        room = self.max_batch_size - self.active_rows
        if room <= 0:
            return []
        if self.active_rows == 0 and self._pending and self.max_wait_s > 0:
            deadline = self._pending[0].created + self.max_wait_s
            with self._cv:
                while self._running and len(self._pending) < room and time.monotonic() < deadline:
                    self._cv.wait(timeout=max(0.0, deadline - time.monotonic()))
        taken: list[RequestHandle] = []
        with self._cv:
            while self._pending and len(taken) < room:
                taken.append(self._pending.popleft())
            self.metrics.queue_depth.set(len(self._pending))
            self._admitting = taken
        return taken

    def _admit(self) -> None:
        now = time.monotonic()
        by_lane: dict[str, list[_Row]] = {}
        for handle in self._take_pending():
            try:
                row = self._admission(handle, now)
            except Exception as exc:
                handle.fail(_row_error(exc, "admitting"))
                continue
            if row is not None:
                by_lane.setdefault(self._lane_key(handle.request.adapter), []).append(row)
        for key, rows in by_lane.items():
            lane = self._lanes.setdefault(key, _Lane(key))
            self._prefill_isolated(lane, rows)
        self._admitting = []

    def _admission(self, handle: RequestHandle, now: float) -> _Row | None:
        waited = now - handle.created
        if handle.cancelled:
            handle.fail(Cancelled("client went away before admission"))
            return None
        adapter = handle.request.adapter
        if adapter is not None and adapter not in self.adapters_present:
            # unloaded between routing and admission: refuse this row, never break the batch
            handle.fail(ModelNotFound(f"model {adapter!r} was unloaded", param="model"))
            return None
        if waited > self.request_timeout_s:
            handle.fail(QueueTimeout(f"request waited {waited:.1f}s in the queue; server overloaded"))
            return None
        self.metrics.queue_wait.observe(waited)
        request = handle.request
        assembler = TextAssembler(self.tokenizer, request.params.stop, cut_at=request.cut_at)
        return _Row(handle, assembler, RowSampler.create(request.params, request.matcher), now)

    def _lane_key(self, adapter: str | None) -> str:
        return adapter if adapter in self.unmixable else MIXED_LANE

    def _forward(self, lane: _Lane, rows: list[_Row], input_ids, mask, position_ids, cache):
        model, routing = self._route_adapters(lane, rows)
        if self._fast_decode and input_ids.shape[1] == 1 and not routing:
            return fastpath.decode_step(model, input_ids, mask, position_ids, cache)
        out = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **routing,
        )
        return out.logits[:, -1, :]

    def _route_adapters(self, lane: _Lane, rows: list[_Row]) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The model and keyword arguments for these rows. Base-only rows run the base view (no PEFT wrappers; see
        app/engine/plain.py). PEFT's mixed-batch path (`adapter_names`) splits every adapted layer per adapter and
        costs +20% per decode step at batch 1 (measured: 42.5 vs 35.4 ms), so a step whose rows share one adapter
        takes the plain path with that adapter active. Switching walks the modules once, only when the mix changes."""
        if not self.peft_active:
            return self.model, {}
        names = {r.handle.request.adapter for r in rows} if lane.key == MIXED_LANE else {lane.key}
        if names == {None}:
            return self._base, {}
        mode: tuple = ("mixed",) if len(names) > 1 else ("one", next(iter(names)))
        if mode != self._peft_mode:
            self.model.base_model.enable_adapter_layers()
            if mode[0] == "one":
                self.model.set_adapter(mode[1])
            self._peft_mode = mode
        if mode[0] == "mixed":
            return self.model, {"adapter_names": [r.handle.request.adapter or BASE for r in rows]}
        return self.model, {}

    def _prefill_isolated(self, lane: _Lane, rows: list[_Row]) -> None:
        # one prefix lookup per row, shared by the join and the prefill (nothing is stored in between)
        matches = [self.prefix.lookup(r.handle.request.adapter, r.handle.request.prompt_ids) for r in rows]
        rows, matches = self._join(lane, rows, matches)
        if not rows:
            return
        try:
            self._prefill(lane, rows, matches)
            return
        except Exception as exc:
            if len(rows) == 1:
                log.warning("prefill failed for request %s: %r", rows[0].handle.request.request_id, exc)
                rows[0].handle.fail(_row_error(exc, "reading the prompt of"))
                return
        for row, match in zip(rows, matches, strict=True):  # find the row that broke the batch: the others join alone
            try:
                self._prefill(lane, [row], [match])
            except Exception as exc:
                log.warning("prefill failed for request %s: %r", row.handle.request.request_id, exc)
                row.handle.fail(_row_error(exc, "reading the prompt of"))

    def _join(self, lane: _Lane, rows: list[_Row], matches: list) -> tuple[list[_Row], list]:
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
            cache = self._cache_for(lane, len(joining))
            kv.seed(cache, [m for _, m in joining], past)
            mask = torch.zeros((len(joining), past), dtype=torch.long, device=self.device)
            for i, (_, m) in enumerate(joining):
                mask[i, past - m.length :] = 1
            self._merge_into(lane, cache, mask)
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

    def _prefill(self, lane: _Lane, rows: list[_Row], matches: list) -> None:
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
        self._set_threads(len(rows) * width)
        cache = self._cache_for(lane, len(rows))
        if past:
            kv.seed(cache, matches, past)
        logits = self._forward(lane, rows, ids, mask, position_ids, cache)
        tokens = sample(logits, [r.sampler for r in rows])
        for r, p, n in zip(rows, prompts, reused, strict=True):
            self.metrics.prompt_tokens.labels(r.adapter_label).inc(len(p))
            if n:
                self.metrics.prefix_reused_tokens.labels(r.adapter_label).inc(n)
        self._remember_prompts(rows, prompts, reused, tokens, cache, mask)
        self._merge_into(lane, cache, mask)
        lane.rows.extend(rows)
        lane.next_tokens.extend(tokens)
        self._accept(lane, len(lane.rows) - len(rows))

    def _cache_for(self, lane: _Lane, rows: int) -> kv.GrowingCache:
        # the lane's first rows keep this cache (room for a full batch); later ones are copied into the lane's
        return kv.GrowingCache(self.max_batch_size if lane.cache is None or not lane.rows else rows)

    @staticmethod
    def _merge_into(lane: _Lane, cache: kv.GrowingCache, mask: torch.Tensor) -> None:
        if lane.cache is None or not lane.rows:
            lane.cache, lane.mask = cache, mask
        else:
            assert lane.mask is not None  # set together with the cache
            lane.cache, lane.mask = kv.merge(lane.cache, lane.mask, cache, mask)

    def _remember_prompts(self, rows, prompts, reused, tokens, cache: kv.GrowingCache, mask: torch.Tensor) -> None:
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

    def _remember_turn(self, lane: _Lane, index: int) -> None:
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

    def _set_threads(self, rows: int) -> None:
        """Torch threads for this worker's next forwards (a per-thread setting). A fixed `threads` wins. Auto:
        every usable core from `wide_from` rows, where the GEMMs are big enough to split (121 vs 110 tokens/s at
        16 streams), all but one below it, where on some CPUs a second thread only spins and takes the core the
        event loop and scorer need; `wide_from` is AUTO_WIDE_ROWS or less, as timed at start-up
        (app/engine/threads.py). A prefill counts its prompt tokens."""
        want = self.threads or (self._cores if rows >= self.wide_from else max(1, self._cores - 1))
        if want != self._threads_now:
            torch.set_num_threads(want)
            self._threads_now = want

    def _step_lanes(self) -> None:
        lanes = [lane for lane in self._lanes.values() if lane.rows]
        self._set_threads(sum(len(lane.rows) for lane in lanes))
        # rotate the start so no lane is always last when several share the worker
        if len(lanes) > 1:
            shift = next(self._round_robin) % len(lanes)
            lanes = lanes[shift:] + lanes[:shift]
        for lane in lanes:
            self._drop_cancelled(lane)
            if lane.rows:
                self._decode_isolated(lane)
        for key in [k for k, lane in self._lanes.items() if not lane.rows]:
            del self._lanes[key]

    def _decode_isolated(self, lane: _Lane) -> None:
        assert lane.cache is not None and lane.mask is not None
        length, mask = lane.mask.shape[1], lane.mask
        try:
            self._decode(lane)
            lane.failures = 0
            return
        except Exception as exc:
            kv.restore_length(lane.cache, length)
            lane.mask = mask
            error = exc
        log.warning("decode step failed for a lane of %d rows (%r); isolating", len(lane.rows), error)
        culprits = [i for i in range(len(lane.rows)) if not self._decodes_alone(lane, i)]
        for i in culprits:
            lane.rows[i].handle.fail(_row_error(error, "generating"))
        if culprits:
            self._remove(lane, culprits)  # the others retry the step on the next iteration
            return
        lane.failures += 1
        if lane.failures > LANE_RETRIES:
            for row in lane.rows:
                row.handle.fail(_row_error(error, "generating"))
            self._remove(lane, list(range(len(lane.rows))))

    def _decodes_alone(self, lane: _Lane, index: int) -> bool:
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
            logits = self._forward(lane, [row], ids, mask, positions, kv.row_copy(lane.cache, index))
        except Exception:
            return False
        return bool(torch.isfinite(logits).all())

    def _decode(self, lane: _Lane) -> None:
        assert lane.cache is not None and lane.mask is not None
        rows = lane.rows
        picks = cast("list[Pick]", lane.next_tokens)  # _accept removed the rows whose sampling failed
        ids = torch.tensor([p.token for p in picks], dtype=torch.long, device=self.device).unsqueeze(1)
        position_ids = lane.mask.sum(-1, keepdim=True)
        mask = torch.cat([lane.mask, torch.ones((len(rows), 1), dtype=lane.mask.dtype, device=self.device)], 1)
        logits = self._forward(lane, rows, ids, mask, position_ids, lane.cache)
        tokens = sample(logits, [r.sampler for r in rows])
        lane.mask = mask
        for row, pick in zip(rows, picks, strict=True):
            row.fed.append(pick.token)
        self.metrics.batch_size.observe(len(rows))
        self.steps += 1
        lane.next_tokens = tokens
        self._accept(lane, 0)

    def _accept(self, lane: _Lane, start: int) -> None:
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
                row.handle.fail(_row_error(pick, "sampling a token for"))
                finished.append(i)
                continue
            try:
                if self._take_token(row, pick, now):
                    finished.append(i)
                    self._remember_turn(lane, i)
            except Exception as exc:  # detokenising or a stop check failed: this row only
                row.handle.fail(_row_error(exc, "decoding the text of"))
                finished.append(i)
        if finished:
            self._remove(lane, finished)
        self._outbox.flush()  # this step's tokens go out now, not after the other lanes' steps

    def _take_token(self, row: _Row, pick: Pick, now: float) -> bool:
        """Add one token to a row; True when the row is finished."""
        token = pick.token
        if token in self.eos_ids:
            self._finish(row, "stop", now)
            return True
        row.sampler.accept(token)
        if pick.logprob is not None:
            row.pending_logprobs.append(self._logprob_entry(pick))
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
            row.handle.emit(TokenEvent(delta, self._take_logprobs(row)))
        if row.assembler.stopped or row.sampler.grammar_done:
            self._finish(row, "stop", now)
            return True
        if row.n_generated >= row.handle.request.params.max_tokens:
            self._finish(row, "length", now)
            return True
        return False

    def _logprob_entry(self, pick: Pick) -> dict:
        def one(token: int, logprob: float) -> dict:
            text = self.tokenizer.decode([token])
            return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

        entry = one(pick.token, float(pick.logprob or 0.0))
        entry["top_logprobs"] = [one(t, lp) for t, lp in pick.top or []]
        return entry

    @staticmethod
    def _take_logprobs(row: _Row) -> list[dict] | None:
        if not row.pending_logprobs:
            return None
        taken, row.pending_logprobs = row.pending_logprobs, []
        return taken

    def _finish(self, row: _Row, reason: str, now: float) -> None:
        tail = row.assembler.finish() if not row.assembler.stopped else ""
        if (tail or row.pending_logprobs) and row.handle.request.emit_text:
            row.handle.emit(TokenEvent(tail, self._take_logprobs(row)))
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
        self._finished_at.append(now)

    def _remove(self, lane: _Lane, indices: list[int]) -> None:
        gone = set(indices)
        keep = [i for i in range(len(lane.rows)) if i not in gone]
        lane.rows = [lane.rows[i] for i in keep]
        lane.next_tokens = [lane.next_tokens[i] for i in keep]
        if not keep:
            lane.cache, lane.mask = None, None
            return
        assert lane.cache is not None and lane.mask is not None
        lane.mask = kv.select_rows(lane.cache, lane.mask, keep)

    def _drop_cancelled(self, lane: _Lane) -> None:
        gone = [i for i, r in enumerate(lane.rows) if r.handle.cancelled]
        for i in gone:
            lane.rows[i].handle.fail(Cancelled("client went away"))
        if gone:
            self._remove(lane, gone)

    def _fail_in_flight(self, exc: Exception) -> None:
        error = (
            exc if isinstance(exc, EngineUnavailable) else GenerationFailed(f"generation failed: {type(exc).__name__}")
        )
        for handle in self._admitting:
            handle.fail(error)
        self._admitting = []
        for lane in self._lanes.values():
            for row in lane.rows:
                row.handle.fail(error)
        self._lanes.clear()


def _kv_bytes_per_token(model: Any) -> int:
    """Bytes one prompt token's keys and values take over all layers (sizes the prefix cache from megabytes)."""
    config: Any = getattr(model, "config", None)  # None or incomplete: AttributeError below
    config = getattr(config, "text_config", None) or config
    try:
        layers = int(config.num_hidden_layers)
        heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
        dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        size = torch.empty((), dtype=getattr(model, "dtype", None) or torch.float32).element_size()
    except (AttributeError, TypeError):
        return 1 << 20  # unknown shape: a conservative guess (a megabyte a token)
    return max(1, layers * 2 * heads * dim * size)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
