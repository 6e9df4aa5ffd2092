"""The history spill's JSONL file, written on a thread of its own.

Why a thread: the spill is written while the store is down or hung, when latency matters most, and a disk can be
slow too (a full page cache, a network volume). Appending and flushing a line per spilled turn, and rewriting up to
`max_spill` turns when the spill drains or a session is deleted, used to run on the event loop; one slow write then
delayed every request of the process. Here the loop only enqueues: appends and rewrites (of a snapshot of the
spill, taken on the loop) run in order on one writer thread. The queue is bounded; when the disk falls that far
behind, further appends are skipped (the turns stay in memory) and the file is marked stale, and the next rewrite
makes it whole again. The file is a crash-recovery copy of the in-memory spill, never its source of truth.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from app.store.base import Turn

log = logging.getLogger("tonewatch.store.spill")
Opener = Callable[..., IO[str]]


class SpillFile:
    def __init__(self, path: Path | str, *, max_pending: int = 1024, opener: Opener = open):
        self.path = Path(path)
        self._opener = opener  # tests pass a slow one (a disk that lags)
        self._ops: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._file: IO[str] | None = None
        self._stale = False  # an append was skipped: the file lacks turns until the next rewrite
        self._warned = False
        self._unfinished = 0  # queued or running writes
        self._done = threading.Condition()

    @property
    def stale(self) -> bool:
        return self._stale

    # ---- called on the event loop: never blocks on the disk ----------------------------------------------------
    def append(self, turn: Turn) -> None:
        self._submit(("append", turn))

    def rewrite(self, turns: Iterable[Turn]) -> None:
        """Make the file hold exactly these turns (empty: truncate it). Takes a snapshot now."""
        self._stale = False
        self._submit(("rewrite", list(turns)))

    def _submit(self, op: tuple[str, Any]) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="history-spill-writer", daemon=True)
            self._thread.start()
        with self._done:
            self._unfinished += 1
        try:
            self._ops.put_nowait(op)
        except queue.Full:
            self._finished()
            self._stale = True
            if not self._warned:
                self._warned = True
                log.warning(
                    "history spill file %s is %d writes behind; turns stay in memory", self.path, self._ops.qsize()
                )

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish the queued writes (up to timeout_s) and stop the writer."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._ops.put(("stop", None), timeout=timeout_s)
        self._thread.join(timeout_s)
        self._thread = None

    def wait_written(self, timeout_s: float = 5.0) -> bool:
        """Block until every write submitted so far is on disk (True), or timeout_s passed (False)."""
        with self._done:
            return self._done.wait_for(lambda: self._unfinished == 0, timeout_s)

    def _finished(self) -> None:
        with self._done:
            self._unfinished -= 1
            self._done.notify_all()

    # ---- start-up (before the loop serves requests, or in a thread) --------------------------------------------
    def read(self) -> list[Turn]:
        """The turns an earlier process left in the file (a torn last line after a crash is skipped)."""
        loaded: list[Turn] = []
        try:
            with self._opener(self.path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        loaded.append(Turn.from_dict(json.loads(line)))
                    except (ValueError, TypeError) as exc:
                        log.warning("skipping unreadable line %d of %s: %s", n, self.path, exc)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("cannot read history spill %s: %s", self.path, exc)
        return loaded

    # ---- the writer thread -------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            kind, payload = self._ops.get()
            if kind == "stop":
                self._close_file()
                return
            try:
                if kind == "append":
                    self._write_line(payload)
                else:
                    self._write_all(payload)
            except (OSError, TypeError, ValueError) as exc:
                log.error("cannot write history spill %s: %s (turns kept in memory)", self.path, exc)
                self._stale = True
                self._close_file()
            finally:
                self._finished()

    def _write_line(self, turn: Turn) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._opener(self.path, "a", encoding="utf-8")
        self._file.write(turn.to_json() + "\n")
        self._file.flush()

    def _write_all(self, turns: list[Turn]) -> None:
        self._close_file()
        if not turns:
            if self.path.exists():
                with self._opener(self.path, "w", encoding="utf-8"):
                    pass
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with self._opener(tmp, "w", encoding="utf-8") as f:
            for turn in turns:
                f.write(turn.to_json() + "\n")
        os.replace(tmp, self.path)

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
