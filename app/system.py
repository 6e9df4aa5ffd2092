"""What the host gives this process."""

from __future__ import annotations

import os


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may run on (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def one_torch_thread() -> None:
    """Keep this thread's torch work on one thread: no OpenMP team of its own.

    Why: libgomp spins between parallel regions only while the process has no more OpenMP threads than cores; a
    second team anywhere (a model load, an adapter check, a scorer batch that once ran wide) makes every team
    sleep after each region, and each of a decode step's ~500 regions then pays a wake-up. Measured on the engine
    alone at one stream: 13.3–14.0 tokens/s with a second 2-thread team in the process, 16.5–20.1 without. So only
    the engine's forwards run multi-threaded on long-lived threads (and the scorer's bulk batches, on a thread
    that exits with its team)."""
    import torch

    torch.set_num_threads(1)
