"""The session index (GET /v1/sessions underneath): one contract, every store (real Redis, a 3-master Redis Cluster,
SQLite). Summaries folded from the appended turns, every filter and order against a row-by-row reference, the
cursor's exactly-once walk while turns arrive, owner scoping of cursors, deletion and TTL leaving every index."""

from __future__ import annotations

import itertools
import random
import time

import pytest
import redis

from app.store.base import SessionStore, Turn
from app.store.summary import InvalidCursor, SessionQuery, encode_cursor

NOW = time.time()
LABELS = ["friendly", "formal", "curt"]


def turn(
    sid: str,
    n: int,
    *,
    ts: float,
    adapter="a1",
    persona="p1",
    label="friendly",
    alert=False,
    score=0.0,
    distance=0.2,
    owner="key_a",
    request_id=None,
) -> Turn:
    return Turn(
        session_id=sid,
        request_id=request_id or f"{sid}-r{n}",
        ts=ts,
        adapter=adapter,
        persona=persona,
        prompt="hi",
        response="hello",
        tone={"label": label, "formality": 0.5, "politeness": 0.5, "warmth": 0.5, "persona_distance": distance},
        drift={
            "score": score,
            "alert": alert,
            "detector": "cusum" if alert else None,
            "cusum": 0.0,
            "threshold": 3.6,
            "dispersion": 0.0,
            "turns": n,
        },
        owner=owner,
    )


async def walk(store: SessionStore, query: SessionQuery) -> list[dict]:
    rows, cursor = await store.list_sessions(query)
    while cursor is not None:
        page, cursor = await store.list_sessions(query, cursor)
        rows += page
    return rows


async def test_summary_is_folded_from_the_turns(store: SessionStore):
    await store.append(turn("s1", 1, ts=NOW - 30, label="friendly", distance=0.2, score=0.1))
    await store.append(turn("s1", 2, ts=NOW - 20, label="curt", distance=0.7, score=1.2, adapter="a2"))
    await store.append(turn("s1", 3, ts=NOW - 10, label="curt", distance=0.5, score=2.0, alert=True, owner="key_b"))
    summary = await store.session_summary("s1")
    assert summary is not None
    assert summary["turns"] == 3 and summary["first_ts"] == NOW - 30 and summary["last_ts"] == NOW - 10
    assert summary["owner"] == "key_a"  # the creator; a later writer does not take the session over
    assert summary["adapter"] == "a1" and summary["label"] == "curt"
    assert summary["labels"] == {"friendly": 1, "curt": 2}
    assert summary["worst"] == {"seq": 2, "persona_distance": 0.7}
    assert summary["drift"]["alert"] is True and summary["drift"]["score"] == 2.0
    assert await store.session_summary("nobody") is None


async def test_a_replayed_turn_is_folded_once(store: SessionStore):
    first = turn("s1", 1, ts=NOW - 5)
    await store.append(first)
    await store.append(first)  # the spill's replay after a half-finished append
    summary = await store.session_summary("s1")
    assert summary is not None and summary["turns"] == 1 and summary["labels"] == {"friendly": 1}


async def test_a_turn_without_tone_keeps_label_and_drift(store: SessionStore):
    await store.append(turn("s1", 1, ts=NOW - 5, label="curt", score=1.5, alert=True))
    cancelled = turn("s1", 2, ts=NOW - 4)
    cancelled.tone, cancelled.drift = {}, None
    await store.append(cancelled)
    summary = await store.session_summary("s1")
    assert summary is not None and summary["turns"] == 2 and summary["label"] == "curt"
    assert summary["drift"]["alert"] is True and summary["labels"] == {"curt": 1}


async def seed(store: SessionStore, n: int = 40, seed: int = 7) -> None:
    rng = random.Random(seed)
    for i in range(n):
        turns = rng.randint(1, 3)
        for k in range(1, turns + 1):
            await store.append(
                turn(
                    f"sess-{i:03d}",
                    k,
                    ts=NOW - 5000 + i * 100 + k + rng.random(),
                    adapter=rng.choice(["a1", "a2"]),
                    persona=rng.choice(["p1", "p2", None]),
                    label=rng.choice(LABELS),
                    alert=rng.random() < 0.3,
                    score=round(rng.uniform(-1, 3), 3),
                    owner=["key_a", "key_b"][i % 2],
                )
            )


QUERIES = [
    SessionQuery(owner=None),
    SessionQuery(owner="key_a"),
    SessionQuery(owner=None, alerting=True),
    SessionQuery(owner="key_b", alerting=False, order="drift"),
    SessionQuery(owner=None, adapter="a2", label="curt"),
    SessionQuery(owner=None, persona="p2", order="drift"),
    SessionQuery(owner="key_a", since=NOW - 3000, until=NOW - 1000),
    SessionQuery(owner=None, alerting=True, adapter="a1", persona="p1", order="drift"),
]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: repr({k: v for k, v in vars(q).items() if v is not None}))
@pytest.mark.parametrize("limit", [1, 7, 500])
async def test_every_filter_and_order_matches_a_row_by_row_reference(store: SessionStore, query, limit):
    await seed(store)
    everything = await walk(store, SessionQuery(owner=None, limit=500))
    assert len(everything) == 40
    expected = [s for s in everything if query.matches(s)]
    if query.order == "drift":
        expected.sort(key=lambda s: s["drift"]["score"], reverse=True)
    else:
        expected.sort(key=lambda s: s["last_ts"], reverse=True)
    got = await walk(store, SessionQuery(**{**vars(query), "limit": limit}))
    assert [s["session_id"] for s in got] == [s["session_id"] for s in expected] or (
        query.order == "drift"  # ties in drift score may come in either order
        and sorted(s["session_id"] for s in got) == sorted(s["session_id"] for s in expected)
    )


async def test_a_walk_visits_every_session_once_while_turns_arrive(store: SessionStore):
    await seed(store, n=30)
    query = SessionQuery(owner=None, limit=7)
    seen, cursor = [], None
    rows, cursor = await store.list_sessions(query)
    seen += [r["session_id"] for r in rows]
    rng = random.Random(3)
    step = itertools.count(10)
    while cursor is not None:
        # new turns on visited and unvisited sessions (moving them to the top), and brand-new sessions
        for sid in rng.sample([f"sess-{i:03d}" for i in range(30)], 5):
            await store.append(turn(sid, next(step), ts=time.time(), label="curt", alert=True, score=3.0))
        await store.append(turn(f"new-{next(step)}", 1, ts=time.time()))
        rows, cursor = await store.list_sessions(query, cursor)
        seen += [r["session_id"] for r in rows]
    assert sorted(seen) == [f"sess-{i:03d}" for i in range(30)]  # each original once, none of the new ones


async def test_cursors_belong_to_their_scope_and_garbage_is_refused(store: SessionStore):
    await seed(store, n=10)
    _, cursor = await store.list_sessions(SessionQuery(owner="key_a", limit=2))
    assert cursor is not None
    with pytest.raises(InvalidCursor):  # another key cannot read key_a's walk
        await store.list_sessions(SessionQuery(owner="key_b", limit=2), cursor)
    with pytest.raises(InvalidCursor):
        await store.list_sessions(SessionQuery(owner=None, limit=2), "not-a-cursor")
    with pytest.raises(InvalidCursor):  # well-formed, but no such walk (expired)
        await store.list_sessions(SessionQuery(owner="key_a", limit=2), encode_cursor("ab" * 12, 2))


async def test_deleting_a_session_removes_it_from_every_index(store: SessionStore, backend, redis_url):
    await store.append(turn("gone", 1, ts=NOW - 5, alert=True, label="curt", adapter="a9", persona="p9"))
    await store.append(turn("kept", 1, ts=NOW - 4))
    assert await store.delete_session("gone") is True
    assert await store.session_summary("gone") is None
    for query in [
        SessionQuery(owner=None),
        SessionQuery(owner=None, alerting=True),
        SessionQuery(owner="key_a"),
        SessionQuery(owner=None, adapter="a9"),
        SessionQuery(owner=None, order="drift"),
    ]:
        assert "gone" not in [s["session_id"] for s in await walk(store, query)]
    assert await store.count_sessions(NOW - 3600) == (1, 0)
    if backend.kind == "redis":  # nothing of it left in any index key
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        index_keys = [k for k in client.scan_iter(match=store.index.base + "*")]  # type: ignore[attr-defined]
        for key in index_keys:
            kind = client.type(key)
            assert not (kind == "zset" and client.zscore(key, "gone") is not None), key
            assert not (kind == "hash" and client.hexists(key, "gone")), key
        client.close()


async def test_counts_for_the_gauges(store: SessionStore):
    await store.append(turn("old", 1, ts=NOW - 7200, alert=True))
    await store.append(turn("calm", 1, ts=NOW - 60))
    await store.append(turn("hot", 1, ts=NOW - 30, alert=True))
    assert await store.count_sessions(NOW - 3600) == (2, 1)


async def test_sessions_past_the_ttl_leave_the_redis_index(backend):
    if backend.kind == "sqlite":
        pytest.skip("the SQLite store keeps history without a TTL")
    store = backend.open(ttl_s=3600)
    await store.append(turn("expired", 1, ts=time.time() - 7200))
    await store.append(turn("fresh", 1, ts=time.time() - 10))
    listed = [s["session_id"] for s in await walk(store, SessionQuery(owner=None))]
    assert listed == ["fresh"]  # not listed once its turns have expired
    await store.index.prune(time.time() - 3600)  # type: ignore[attr-defined]  (the write path also prunes)
    assert await store.session_summary("expired") is None
