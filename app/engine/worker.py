"""The one worker thread that owns the model: a continuous-batching decode loop.

Requests wait in a bounded queue (app/engine/admission.py); the worker admits them into a running batch between
decode steps (app/engine/prefill.py: left-padded prefill with prefix reuse, then a KV-cache merge), decodes one
token for every row per step (app/engine/decode.py), and drops rows the moment they finish or their client goes
away. Rows whose adapters PEFT can mix share a lane (one forward with `adapter_names`); adapters that cannot be
mixed (DoRA, ...) get a lane of their own (app/engine/lanes.py). Admin work that mutates the model (installing
adapters) runs between steps via `call()`, so no forward ever sees a half-installed adapter. The model, its
adapters and how a forward is routed to them belong to this class and change only on its thread.

Fault isolation: every submitted request gets exactly one terminal event (DoneEvent or ErrorEvent), always. A row
that fails while being admitted, prefilled, sampled or decoded fails alone (prefill.py and decode.py say how), and
only a failure that no single row reproduces fails its lane (never other lanes).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from app.engine import fastpath, peft_install
from app.engine.adapter_files import AdapterSpec
from app.engine.admission import Admission
from app.engine.decode import Decode
from app.engine.events import GenerationRequest, Outbox, RequestHandle
from app.engine.lanes import MIXED_LANE, Lane, Row, row_error
from app.engine.plain import base_view
from app.engine.prefill import Prefill
from app.engine.prefix import PrefixCache
from app.engine.threads import lean_decode_wins, wide_from
from app.errors import EngineUnavailable, GenerationFailed, ModelNotFound
from app.metrics import Metrics
from app.system import usable_cores

log = logging.getLogger("tonewatch.engine")
BASE = "__base__"  # PEFT's name for "no adapter" in adapter_names
AUTO_WIDE_ROWS = 8  # from this many rows in a forward, auto threads use every core (see Engine._set_threads)


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
        self._lanes: dict[str, Lane] = {}
        self._thread: threading.Thread | None = None
        self._round_robin = itertools.count()
        self._outbox = Outbox()
        self.admission = Admission(
            metrics,
            self._outbox,
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_ms / 1000.0,
            max_queue=max_queue,
            request_timeout_s=request_timeout_s,
        )
        # prompt prefixes already read, per adapter (see app/engine/prefix.py); 0 MB turns reuse off
        self.prefix = PrefixCache(int(prefix_cache_mb * 2**20 // _kv_bytes_per_token(model)))
        self.decoder = Decode(
            self._forward,
            metrics,
            self._outbox,
            device=device,
            eos_ids=self.eos_ids,
            on_finished=self.admission.finished,
            remember_turn=lambda lane, index: self.prefiller.remember_turn(lane, index),
        )
        self.prefiller = Prefill(
            self._forward,
            self.prefix,
            metrics,
            device=device,
            pad_id=self.pad_id,
            max_batch_size=max_batch_size,
            set_threads=self._set_threads,
            accept=self.decoder.accept,
        )

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker and return once it is ready. With auto threads it first times a few decode steps (under a
        second on the bundled model) on its own thread — torch's thread pool belongs to the thread that runs the
        forwards — before any request can wait on it."""
        self.admission.running = True
        ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(ready,), name="tonewatch-engine", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self) -> None:
        self.admission.stop()
        if self._thread:
            self._thread.join(timeout=30)
        for handle in self.admission.drain():
            handle.fail(EngineUnavailable("server is shutting down"))

    @property
    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    @property
    def queue_depth(self) -> int:
        return self.admission.depth

    @property
    def active_rows(self) -> int:
        return sum(len(lane.rows) for lane in self._lanes.values())

    @property
    def steps(self) -> int:
        """Decode steps run (each one token for every row of a lane)."""
        return self.decoder.steps

    def retry_after_s(self) -> float:
        return self.admission.retry_after_s()

    # ---- API for the event loop -------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> RequestHandle:
        return self.admission.submit(request)

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run fn on the worker thread between decode steps (for anything that mutates the model)."""
        return self.admission.call(fn)

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
                lane.remove(late)
        self.adapters_present.discard(name)
        self.unmixable.discard(name)
        self.model, self.peft_active = peft_install.remove(self.model, name)

    def rows_for_adapter(self, adapter: str) -> int:
        """Queued plus running requests for an adapter (read from any thread; a snapshot)."""
        running = sum(
            1 for lane in list(self._lanes.values()) for r in list(lane.rows) if r.handle.request.adapter == adapter
        )
        return self.admission.waiting_for(adapter) + running

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
        while self.admission.wait_for_work(busy=lambda: self.active_rows > 0):
            try:
                self.admission.run_control(before_each=self._model_may_change)
                self._admit()
                self._step_lanes()
            except Exception as exc:  # a bug, not a row's fault: fail what is in flight, keep serving
                log.exception("engine step failed unexpectedly")
                self._fail_in_flight(exc)
            finally:
                self._outbox.flush()
        self._fail_in_flight(EngineUnavailable("server is shutting down"))

    def _model_may_change(self) -> None:
        self._peft_mode = None  # control work may add, remove or activate adapters
        self.prefix.clear()  # ... and keys read under an adapter that changed must not be reused

    def _admit(self) -> None:
        now = time.monotonic()
        by_lane: dict[str, list[Row]] = {}
        room = self.max_batch_size - self.active_rows
        for handle in self.admission.take(room, idle=self.active_rows == 0):
            try:
                row = self.admission.row_for(handle, now, self.adapters_present, self.tokenizer)
            except Exception as exc:
                handle.fail(row_error(exc, "admitting"))
                continue
            if row is not None:
                by_lane.setdefault(self._lane_key(handle.request.adapter), []).append(row)
        for key, rows in by_lane.items():
            self.prefiller.admit(self._lanes.setdefault(key, Lane(key)), rows)
        self.admission.admitting = []

    def _lane_key(self, adapter: str | None) -> str:
        return adapter if adapter in self.unmixable else MIXED_LANE

    def _forward(self, lane: Lane, rows: list[Row], input_ids, mask, position_ids, cache):
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

    def _route_adapters(self, lane: Lane, rows: list[Row]) -> tuple[torch.nn.Module, dict[str, Any]]:
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
            lane.drop_cancelled()
            if lane.rows:
                self.decoder.step(lane)
        for key in [k for k, lane in self._lanes.items() if not lane.rows]:
            del self._lanes[key]

    def _fail_in_flight(self, exc: Exception) -> None:
        error = (
            exc if isinstance(exc, EngineUnavailable) else GenerationFailed(f"generation failed: {type(exc).__name__}")
        )
        self.admission.fail_admitting(error)
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
