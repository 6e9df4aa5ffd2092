"""One contract, both SessionStore implementations (real Redis db 13 and a SQLite file)."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.store.base import SessionStore, StoreUnavailable, Turn, session_state_key
from app.store.factory import open_store
from app.store.redis_store import RedisStore
from app.store.sqlite_store import SQLiteStore


def make_turn(session_id: str = "sess-1", n: int = 1, **over) -> Turn:
    fields = dict(
        session_id=session_id,
        request_id=f"req-{n}",
        ts=1_700_000_000.123456 + n,
        adapter="base",
        persona="concierge",
        prompt=f"prompt {n}",
        response=f"response {n}",
        tone={
            "label": "polite",
            "probs": {"polite": 0.9, "rude": 0.1},
            "formality": 0.7,
            "politeness": 0.9,
            "warmth": 0.6,
            "persona_distance": 0.21,
            "persona_match": True,
        },
        latency={"queue_s": 0.001, "ttft_s": 0.05, "total_s": 0.4, "tokens": 17},
        drift={"score": 0.1 * n, "alert": False, "detector": "ewma"},
        spikes=["total"] if n % 3 == 0 else [],
    )
    fields.update(over)
    return Turn(**fields)


def strip_seq(turn: Turn) -> dict:
    d = turn.to_dict()
    d.pop("seq")
    return d


async def test_protocol_and_ping(store: SessionStore):
    assert isinstance(store, SessionStore)
    await store.ping()


async def test_append_assigns_seq_in_order_and_round_trips(store: SessionStore):
    sent = [make_turn(n=n) for n in range(1, 6)]
    seqs = [await store.append(t) for t in sent]
    assert seqs == [1, 2, 3, 4, 5]
    got = await store.get_turns("sess-1")
    assert [t.seq for t in got] == [1, 2, 3, 4, 5]
    assert [strip_seq(t) for t in got] == [strip_seq(t) for t in sent]
    assert got[0].ts == sent[0].ts  # float precision survives
    assert await store.count_turns("sess-1") == 5


async def test_optional_fields_and_empty_values(store: SessionStore):
    t = make_turn(n=1, persona=None, prompt=None, drift=None, latency={}, spikes=[], adapter="external")
    assert await store.append(t) == 1
    [got] = await store.get_turns("sess-1")
    assert strip_seq(got) == strip_seq(t)


async def test_unknown_session(store: SessionStore):
    assert await store.get_turns("nope") == []
    assert await store.count_turns("nope") == 0
    assert await store.delete_session("nope") is False
    assert await store.get_state("nope") is None


async def test_paging_with_after_and_limit(store: SessionStore):
    for n in range(1, 26):
        await store.append(make_turn(n=n))
    pages, after = [], 0
    while page := await store.get_turns("sess-1", after=after, limit=10):
        pages.append([t.seq for t in page])
        after = page[-1].seq
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert [t.seq for t in await store.get_turns("sess-1", after=7, limit=3)] == [8, 9, 10]
    assert [t.seq for t in await store.get_turns("sess-1", after=24, limit=10)] == [25]
    assert await store.get_turns("sess-1", after=25) == []
    assert await store.get_turns("sess-1", after=1000) == []
    assert await store.get_turns("sess-1", limit=0) == []
    assert len(await store.get_turns("sess-1", limit=1000)) == 25


async def test_idempotent_append(store: SessionStore):
    assert await store.append(make_turn(n=1)) == 1
    assert await store.append(make_turn(n=2)) == 2
    # a replay (same session + request id) returns the original seq and stores nothing, even with changed content
    assert await store.append(make_turn(n=1, response="replayed")) == 1
    assert await store.append(make_turn(n=2)) == 2
    assert await store.count_turns("sess-1") == 2
    assert [t.response for t in await store.get_turns("sess-1")] == ["response 1", "response 2"]
    # the same request id in another session is a different turn
    assert await store.append(make_turn("sess-2", n=1)) == 1
    assert await store.append(make_turn(n=3)) == 3


async def test_concurrent_appends_get_distinct_seqs(store: SessionStore):
    seqs = await asyncio.gather(*(store.append(make_turn(n=n)) for n in range(1, 31)))
    assert sorted(seqs) == list(range(1, 31))
    # replaying all of them concurrently changes nothing
    again = await asyncio.gather(*(store.append(make_turn(n=n)) for n in range(1, 31)))
    assert again == seqs
    got = await store.get_turns("sess-1", limit=100)
    assert [t.seq for t in got] == list(range(1, 31))
    assert {t.request_id: t.seq for t in got} == {f"req-{n}": s for n, s in zip(range(1, 31), seqs, strict=True)}


async def test_cap_keeps_newest(backend):
    store = backend.open(max_turns=5)
    for n in range(1, 13):
        assert await store.append(make_turn(n=n)) == n
    assert await store.count_turns("sess-1") == 5
    assert [t.seq for t in await store.get_turns("sess-1")] == [8, 9, 10, 11, 12]
    assert [t.seq for t in await store.get_turns("sess-1", after=3)] == [8, 9, 10, 11, 12]
    assert [t.seq for t in await store.get_turns("sess-1", after=9, limit=2)] == [10, 11]
    assert await store.append(make_turn(n=12)) == 12  # a held turn is still deduplicated
    assert await store.append(make_turn(n=13)) == 13
    assert [t.request_id for t in await store.get_turns("sess-1")] == [f"req-{n}" for n in range(9, 14)]


async def test_delete_session_and_owned_state(store: SessionStore):
    for sid in ("a", "a:b", "a.b"):  # ids sharing a prefix must not collide
        for n in (1, 2):
            await store.append(make_turn(sid, n=n))
        await store.update_state(session_state_key(sid), lambda s: {"n": 1})
        await store.update_state(session_state_key(sid, "drift"), lambda s: {"n": 2})
    await store.update_state("global-baseline", lambda s: {"n": 3})

    assert await store.delete_session("a") is True
    assert await store.get_turns("a") == []
    assert await store.count_turns("a") == 0
    assert await store.get_state("a") is None
    assert await store.get_state("a/drift") is None
    for sid in ("a:b", "a.b"):
        assert await store.count_turns(sid) == 2
        assert await store.get_state(sid) == {"n": 1}
        assert await store.get_state(f"{sid}/drift") == {"n": 2}
    assert await store.get_state("global-baseline") == {"n": 3}
    assert await store.delete_session("a") is False

    # a deleted session starts over; its old request ids are no longer seen as replays
    assert await store.append(make_turn("a", n=2, ts=time.time() + 1)) == 1
    assert [t.request_id for t in await store.get_turns("a")] == ["req-2"]

    # state alone also counts as an existing session
    await store.update_state("only-state", lambda s: {"x": 1})
    assert await store.delete_session("only-state") is True
    assert await store.get_state("only-state") is None


async def test_tombstone_refuses_what_was_produced_before_the_deletion(store: SessionStore):
    """A turn (or drift update) created before a session was deleted and replayed later, e.g. from another
    replica's spill, must not bring the session back."""
    from app.store.base import REFUSED, SessionDeleted

    before = time.time()
    await store.append(make_turn("t1", n=1, ts=before))
    await store.update_state("t1/drift", lambda s: {"n": 1}, created_after=before)
    assert await store.delete_session("t1") is True
    assert await store.append(make_turn("t1", n=2, ts=before)) == REFUSED
    with pytest.raises(SessionDeleted):
        await store.update_state("t1/drift", lambda s: {"n": 2}, created_after=before)
    assert await store.get_turns("t1") == [] and await store.get_state("t1/drift") is None
    later = time.time() + 1
    assert await store.append(make_turn("t1", n=3, ts=later)) == 1
    assert await store.update_state("t1/drift", lambda s: {"n": 3}, created_after=later) == {"n": 3}
    # other sessions are unaffected by the tombstone
    assert await store.append(make_turn("t2", n=1, ts=before)) == 1


def increment(state: dict | None) -> dict:
    state = dict(state or {"count": 0, "history": []})
    state["count"] += 1
    return state


async def test_update_state_is_atomic(store: SessionStore):
    results = await asyncio.gather(*(store.update_state("sess-1/drift", increment) for _ in range(20)))
    assert (await store.get_state("sess-1/drift"))["count"] == 20
    assert sorted(r["count"] for r in results) == list(range(1, 21))  # each task saw a distinct predecessor


async def test_update_state_is_atomic_across_connections(backend):
    """Two store instances = two independent connections (two Redis pools, or two SQLite connections)."""
    a, b = backend.open(), backend.open()
    tasks = [s.update_state("shared", increment) for _ in range(20) for s in (a, b)]
    await asyncio.gather(*tasks)
    assert (await a.get_state("shared"))["count"] == 40
    assert (await b.get_state("shared"))["count"] == 40


async def test_update_state_fn_sees_current_value_and_errors_propagate(store: SessionStore):
    seen = []

    def fn(state):
        seen.append(state)
        return {"v": (state or {"v": 0})["v"] + 1, "nested": {"list": [1, 2.5, None, "ü"]}}

    assert await store.update_state("k", fn) == {"v": 1, "nested": {"list": [1, 2.5, None, "ü"]}}
    assert await store.update_state("k", fn) == {"v": 2, "nested": {"list": [1, 2.5, None, "ü"]}}
    assert seen[0] is None and seen[-1]["v"] == 1

    def boom(state):
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        await store.update_state("k", boom)
    assert (await store.get_state("k"))["v"] == 2  # unchanged
    assert await store.update_state("k", fn) == {"v": 3, "nested": {"list": [1, 2.5, None, "ü"]}}


async def test_control_document_is_versioned_compare_and_set(backend):
    from app.store.base import VersionConflict

    store = backend.open()
    assert await store.get_control() == (0, {})
    doc = {"personas": {"pirate": {"description": "Arr ☠️", "exemplars": ["a"]}}, "adapters": {}, "default": None}
    assert await store.cas_control(0, doc) == 1
    with pytest.raises(VersionConflict) as info:  # a writer that read version 0 lost the race
        await store.cas_control(0, {"personas": {}})
    assert info.value.current == 1
    assert await store.cas_control(1, {**doc, "default": "acme"}) == 2
    await store.close()
    reopened = backend.open()  # a restart: the document persists
    assert await reopened.get_control() == (2, {**doc, "default": "acme"})


async def test_concurrent_control_writers_never_lose_an_update(backend):
    """Eight writers each add their own key with read-modify-CAS: all eight survive (no lost update)."""
    from app.store.base import VersionConflict

    stores = [backend.open() for _ in range(4)]

    async def writer(i: int):
        store = stores[i % len(stores)]
        while True:
            version, doc = await store.get_control()
            doc = {**doc, "adapters": {**doc.get("adapters", {}), f"a{i}": f"p{i}"}}
            try:
                return await store.cas_control(version, doc)
            except VersionConflict:
                await asyncio.sleep(0.001 * i)

    versions = await asyncio.gather(*(writer(i) for i in range(8)))
    assert sorted(versions) == list(range(1, 9))
    _, doc = await stores[0].get_control()
    assert doc["adapters"] == {f"a{i}": f"p{i}" for i in range(8)}


async def test_history_persists_across_reopen(backend):
    store = backend.open()
    for n in range(1, 4):
        await store.append(make_turn(n=n))
    await store.close()
    reopened = backend.open()
    assert [t.seq for t in await reopened.get_turns("sess-1")] == [1, 2, 3]
    assert await reopened.append(make_turn(n=3)) == 3
    assert await reopened.append(make_turn(n=4)) == 4


UNICODE_SAMPLES = [
    "Grüße, naïve café — “quotes” ‘single’ …",
    "日本語のテキストと中文文本，한국어 텍스트",
    "مرحبا بالعالم שלום עולם",  # RTL
    "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 👍🏽 ☠️",
    "e\u0301 combining, zero\u200bwidth, line\u2028separator, tab\t newline\n nul\x00 end",
    'json-ish {"seq":99,"request_id":"evil"} \\ backslash "quote"',
    "lone surrogate \ud800 survives",
]


@pytest.mark.parametrize("text", UNICODE_SAMPLES, ids=range(len(UNICODE_SAMPLES)))
async def test_unicode_text_round_trips(store: SessionStore, text: str):
    t = make_turn(
        "sess-ü",
        n=1,
        prompt=text,
        response=text[::-1],
        persona="ペルソナ",
        tone={"label": text[:5], "probs": {text[:3]: 1.0}},
    )
    assert await store.append(t) == 1
    [got] = await store.get_turns("sess-ü")
    assert strip_seq(got) == strip_seq(t)
    version, _ = await store.get_control()
    await store.cas_control(version, {"personas": {"ペルソナ ☕": {"text": text}}})
    assert (await store.get_control())[1]["personas"]["ペルソナ ☕"] == {"text": text}


async def test_large_turn(store: SessionStore):
    big = "x" * 200_000 + "é"
    assert await store.append(make_turn(n=1, response=big)) == 1
    assert (await store.get_turns("sess-1"))[0].response == big


async def test_open_store_factory(tmp_path, redis_url, redis_prefix):
    r = open_store(redis_url, tmp_path / "unused.db", prefix=redis_prefix, max_turns=7, ttl_s=60)
    s = open_store(None, tmp_path / "tw.db", prefix="ignored", max_turns=7, ttl_s=60)
    try:
        assert isinstance(r, RedisStore) and r.max_turns == 7 and r.prefix == redis_prefix
        assert isinstance(s, SQLiteStore) and s.max_turns == 7
        assert not (tmp_path / "unused.db").exists()
        await r.ping()
        await s.ping()
    finally:
        await r.close()
        await s.close()


async def test_redis_ttl_is_set_on_write(redis_url, redis_prefix):
    import redis.asyncio as aioredis

    store = RedisStore(redis_url, prefix=redis_prefix, ttl_s=300)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await store.append(make_turn(n=1))
        await store.update_state("sess-1/drift", increment)
        for key in ("s:{sess-1}:turns", "s:{sess-1}:seq", "s:{sess-1}:reqs", "s:{sess-1}:stkeys", "st:{sess-1}/drift"):
            assert 0 < await raw.ttl(redis_prefix + key) <= 300, key
        await store.cas_control(0, {"personas": {"p": {}}})
        assert await raw.ttl(redis_prefix + "control") == -1  # the control document never expires
    finally:
        await raw.aclose()
        await store.close()


async def test_unreachable_store_raises_store_unavailable(tmp_path):
    from tests.support.servers import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2)
    try:
        t0 = time.monotonic()
        for call in (
            store.ping(),
            store.append(make_turn()),
            store.get_turns("x"),
            store.update_state("k", increment),
            store.get_control(),
        ):
            with pytest.raises(StoreUnavailable) as info:
                await call
            assert info.value.__cause__ is not None
        assert time.monotonic() - t0 < 5  # fails fast, no long client-side retry loop
    finally:
        await store.close()

    db = SQLiteStore(tmp_path / "closed.db")
    await db.close()
    with pytest.raises(StoreUnavailable):
        await db.ping()
