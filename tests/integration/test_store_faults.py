"""ResilientHistory against real outages: a redis-server of our own is killed, paused and restarted mid-session."""

from __future__ import annotations

import asyncio
import json
import time

from app.metrics import Metrics
from app.store.base import Turn
from app.store.redis_store import RedisStore
from app.store.spill import ResilientHistory
from tests.support.servers import free_port


def turn(n: int, session_id: str = "sess-f") -> Turn:
    return Turn(
        session_id=session_id,
        request_id=f"req-{n:04d}",
        ts=1_700_000_000.0 + n,
        adapter="base",
        persona="concierge",
        prompt=f"prompt {n} — ü",
        response=f"response {n} 👍",
        tone={"label": "polite"},
        latency={"total_s": 0.1},
        drift={"score": 0.0, "alert": False},
        spikes=[],
    )


def fast_history(store, spill_path, **kw) -> ResilientHistory:
    kw.setdefault("write_timeout_s", 1.0)
    return ResilientHistory(store, spill_path, retry_min_s=0.02, retry_max_s=0.2, **kw)


def spill_lines(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sample(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


async def assert_history(store: RedisStore, request_numbers: list[int], session_id: str = "sess-f") -> None:
    got = await store.get_turns(session_id, limit=10_000)
    assert [t.seq for t in got] == list(range(1, len(request_numbers) + 1))
    assert [t.request_id for t in got] == [f"req-{n:04d}" for n in request_numbers]  # in order, no duplicates
    assert [t.response for t in got] == [f"response {n} 👍" for n in request_numbers]


async def test_kill_and_restart_replays_everything_in_order(redis_server, tmp_path):
    server = redis_server()
    store = RedisStore(server.url, socket_timeout=0.5)
    metrics = Metrics()
    spill = tmp_path / "spill.jsonl"
    history = fast_history(store, spill, metrics=metrics)
    await history.start()
    try:
        for n in range(1, 11):
            await history.record(turn(n))
        assert history.spilled == 0 and not history.degraded

        server.kill()  # crash mid-session
        for n in range(11, 26):
            await history.record(turn(n))  # must not raise
        assert history.degraded
        assert history.spilled == 15
        assert await history.file_written()  # the file is written off the event loop
        assert [d["request_id"] for d in spill_lines(spill)] == [f"req-{n:04d}" for n in range(11, 26)]
        assert sample(metrics, "tonewatch_history_spilled_turns") == 15
        assert sample(metrics, "tonewatch_history_write_errors_total") == 15

        server.start()  # same port, same data directory
        for n in range(26, 31):  # recorded while the replay is pending: queued behind it
            await history.record(turn(n))
        assert await history.flush(10), f"spill did not drain: {history.spilled} left"

        await assert_history(store, list(range(1, 31)))
        assert not history.degraded
        assert await history.file_written()  # the file is written off the event loop
        assert spill_lines(spill) == []
        assert sample(metrics, "tonewatch_history_spilled_turns") == 0
        assert sample(metrics, "tonewatch_history_write_seconds_count") >= 30
        assert sample(metrics, "tonewatch_history_dropped_turns_total") == 0

        await history.record(turn(31))  # back to direct writes
        assert history.spilled == 0
        await assert_history(store, list(range(1, 32)))
    finally:
        await history.stop()
        await store.close()


async def test_restart_without_persistence_replays_the_spill(redis_server, tmp_path):
    """A Redis that comes back empty: what was spilled still lands, in order, numbered from 1."""
    server = redis_server(persistent=False)
    store = RedisStore(server.url, socket_timeout=0.5)
    history = fast_history(store, tmp_path / "spill.jsonl")
    await history.start()
    try:
        for n in range(1, 4):
            await history.record(turn(n))
        server.kill()
        for n in range(4, 9):
            await history.record(turn(n))
        server.start()
        assert await history.flush(10)
        await assert_history(store, list(range(4, 9)))
    finally:
        await history.stop()
        await store.close()


async def test_paused_server_times_out_then_replays_without_duplicates(redis_server, tmp_path):
    """SIGSTOP: writes time out (they may still execute when the server resumes); the replay must not duplicate."""
    server = redis_server()
    store = RedisStore(server.url, socket_timeout=0.25)
    history = fast_history(store, tmp_path / "spill.jsonl", write_timeout_s=0.5)
    await history.start()
    try:
        for n in range(1, 4):
            await history.record(turn(n))
        server.pause()
        for n in range(4, 10):
            await asyncio.wait_for(history.record(turn(n)), 3)  # only the first waits for the timeout
        assert history.degraded and history.spilled == 6
        server.resume()
        assert await history.flush(10)
        await assert_history(store, list(range(1, 10)))
    finally:
        await history.stop()
        await store.close()


async def test_spill_file_is_reloaded_and_replayed_by_a_new_instance(redis_server, tmp_path):
    spill = tmp_path / "spill.jsonl"
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2)
    first = fast_history(dead, spill)
    await first.start()
    for n in range(1, 6):
        await first.record(turn(n))
    assert first.spilled == 5 and first.degraded
    await first.stop()  # the process goes away with the store still down
    await dead.close()
    with open(spill, "a", encoding="utf-8") as f:
        f.write('{"session_id": "sess-f", "request_id": "torn')  # a line cut short by the crash

    server = redis_server()
    store = RedisStore(server.url)
    await store.append(turn(1))  # turn 1 reached the store before the crash: replaying it must not duplicate it
    second = fast_history(store, spill)
    await second.start()
    try:
        assert await second.flush(10)
        await assert_history(store, [1, 2, 3, 4, 5])
        assert second.replayed == 5
        assert await second.file_written()  # the file is written off the event loop
        assert spill_lines(spill) == []
        await second.record(turn(6))
        await assert_history(store, [1, 2, 3, 4, 5, 6])
    finally:
        await second.stop()
        await store.close()


async def test_spill_is_bounded_oldest_dropped_and_counted(redis_server, tmp_path):
    server = redis_server()
    store = RedisStore(server.url, socket_timeout=0.5)
    metrics = Metrics()
    spill = tmp_path / "spill.jsonl"
    history = fast_history(store, spill, max_spill=5, metrics=metrics)
    await history.start()
    try:
        await history.record(turn(1))
        await history.record(turn(2))
        server.kill()
        for n in range(3, 15):
            await history.record(turn(n))
        assert history.spilled == 5
        assert history.dropped == 7
        assert sample(metrics, "tonewatch_history_dropped_turns_total") == 7
        assert sample(metrics, "tonewatch_history_spilled_turns") == 5
        assert await history.file_written()  # the file is written off the event loop
        assert len(spill_lines(spill)) <= 10  # the file is compacted too
        assert [d["request_id"] for d in spill_lines(spill)][-5:] == [f"req-{n:04d}" for n in range(10, 15)]

        server.start()
        assert await history.flush(10)
        await assert_history(store, [1, 2, 10, 11, 12, 13, 14])  # the newest five survived, in order
    finally:
        await history.stop()
        await store.close()


async def test_reload_applies_the_bound(redis_server, tmp_path):
    spill = tmp_path / "spill.jsonl"
    spill.write_text("".join(turn(n).to_json() + "\n" for n in range(1, 9)), encoding="utf-8")
    server = redis_server()
    store = RedisStore(server.url)
    history = fast_history(store, spill, max_spill=3)
    await history.start()
    try:
        assert history.dropped == 5
        assert await history.flush(10)
        await assert_history(store, [6, 7, 8])
    finally:
        await history.stop()
        await store.close()


class SlowDisk:
    """open() for a disk that takes `delay_s` per write (a full page cache, a network volume that lags)."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.writes = 0

    def __call__(self, path, mode="r", **kw):
        real = open(path, mode, **kw)  # noqa: SIM115 (returned to the caller)
        disk = self

        class Slow:
            def write(self, text):
                time.sleep(disk.delay_s)
                disk.writes += 1
                return real.write(text)

            def __getattr__(self, name):
                return getattr(real, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                real.close()

            def __iter__(self):
                return iter(real)

        return Slow()


async def test_a_slow_disk_does_not_delay_the_event_loop(tmp_path):
    """Turns spilled while the store is down go to a disk that takes 0.5 s a write: the event loop, which serves
    every other request, never waits for it (before, each spilled turn blocked it for the write)."""
    from app.store.spill_file import SpillFile

    disk = SlowDisk(0.5)
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2)
    spill = tmp_path / "spill.jsonl"
    history = fast_history(dead, spill, spill_file=SpillFile(spill, opener=disk))
    await history.start()
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker():  # what every other request on this loop would feel
        while not stop.is_set():
            t0 = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t0 - 0.01)

    tick = asyncio.create_task(ticker())
    try:
        for n in range(1, 7):
            await history.record(turn(n))
        assert history.spilled == 6
        assert await history.file_written(timeout_s=60)
        stop.set()
        await tick
        assert disk.writes >= 6  # the writes really were slow, and all happened
        # a blocking write would stall the loop for its whole 0.5 s; this bound only fails if one did
        assert max(lags) < disk.delay_s, max(lags)
        assert [d["request_id"] for d in spill_lines(spill)] == [f"req-{n:04d}" for n in range(1, 7)]
    finally:
        stop.set()
        await history.stop()
        await dead.close()
