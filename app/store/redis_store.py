"""RedisStore: session history in Redis.

Key layout (prefix defaults to "tw:"); `{sid}` is a Redis Cluster hash tag, so every key of one session lives in
one slot and the Lua script, WATCH/MULTI and the multi-key DEL work on a cluster:
  {p}s:{sid}:turns    list of turn JSON, oldest first, capped at max_turns; each item starts with '{"seq":N,'
  {p}s:{sid}:seq      INCR counter that assigns seq
  {p}s:{sid}:reqs     hash request_id -> seq: the idempotency markers (pruned with the turns they mark)
  {p}s:{sid}:stkeys   set of the session's "<sid>/<name>" state keys (so delete_session finds them without SCAN)
  {p}s:{sid}:tomb     deletion time (unix seconds): turns and state updates produced before it are refused
  {p}st:{sid}/name    JSON state dict for update_state/get_state (keys without "/" are hash-tagged whole)
  {p}personas         hash name -> persona JSON (no TTL)
Every session key, and state, has its TTL (ttl_s) refreshed on write; a tombstone lives for ttl_s.

append is one Lua script (one round trip, atomic): check the marker, INCR, RPUSH, trim, prune markers, EXPIRE. The
markers live in a per-session hash rather than one SET-NX key per request so that delete_session and the cap remove
them too (a stale marker would otherwise swallow a legitimately re-sent turn). update_state is WATCH/MULTI with a
jittered retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from app.store.base import STATE_SEP, SessionDeleted, StoreUnavailable, Turn, dumps, state_owner

log = logging.getLogger("tonewatch.store.redis")

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,  # includes BusyLoadingError and MaxConnectionsError
    rexc.TimeoutError,
    rexc.ReadOnlyError,  # failover in progress: writes hit a replica
    OSError,
    asyncio.TimeoutError,
)
if hasattr(rexc, "OutOfMemoryError"):
    _UNAVAILABLE += (rexc.OutOfMemoryError,)

# KEYS: turns, seq, reqs, tomb   ARGV: request_id, turn JSON without seq, max_turns, ttl_s, turn ts
_APPEND_LUA = """
local tomb = redis.call('GET', KEYS[4])
if tomb and tonumber(ARGV[5]) <= tonumber(tomb) then return 0 end
local seen = redis.call('HGET', KEYS[3], ARGV[1])
if seen then return tonumber(seen) end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[1], seq)
redis.call('RPUSH', KEYS[1], '{"seq":' .. seq .. ',' .. string.sub(ARGV[2], 2))
local over = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[3])
if over > 0 then
  local old = redis.call('LPOP', KEYS[1], over)
  for _, item in ipairs(old) do
    local ok, t = pcall(cjson.decode, item)
    if ok and type(t) == 'table' and t.request_id then redis.call('HDEL', KEYS[3], t.request_id) end
  end
end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
return seq
"""

# KEYS: turns   ARGV: after, limit. Seqs in the list are contiguous, so the slice is computed from the first one.
_PAGE_LUA = """
local first = redis.call('LINDEX', KEYS[1], 0)
if not first then return {} end
local s0 = tonumber(string.match(first, '^{"seq":(%d+),'))
local start = 0
if s0 then start = math.max(0, tonumber(ARGV[1]) + 1 - s0) end
return redis.call('LRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1)
"""


class RedisStore:
    def __init__(
        self,
        url: str,
        prefix: str = "tw:",
        max_turns: int = 1000,
        ttl_s: int = 7 * 86400,
        socket_timeout: float = 1.0,
        max_connections: int = 64,
        state_retries: int = 200,
    ):
        if max_turns < 1:
            raise ValueError("max_turns must be >= 1")
        self.prefix = prefix
        self.max_turns = int(max_turns)
        self.ttl_s = int(ttl_s)
        self.state_retries = state_retries
        # Fail fast: two quick reconnect attempts (enough to get past connections a restarted server dropped), not
        # redis-py's default ten with up to 1 s backoff; the caller (ResilientHistory) owns the longer retries.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=max(socket_timeout * 5, 1.0),
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            decode_responses=True,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=2),
        )
        self._r = aioredis.Redis.from_pool(pool)
        self._append = self._r.register_script(_APPEND_LUA)
        self._page = self._r.register_script(_PAGE_LUA)

    # keys
    def _sk(self, session_id: str, what: str) -> str:
        return f"{self.prefix}s:{{{session_id}}}:{what}"

    def _state_key(self, key: str) -> str:
        owner, sep, rest = key.partition(STATE_SEP)
        return f"{self.prefix}st:{{{owner}}}{sep}{rest}"

    @contextlib.asynccontextmanager
    async def _io(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis {what}: {type(exc).__name__}: {exc}") from exc

    # protocol
    async def ping(self) -> None:
        async with self._io("ping"):
            await self._r.ping()

    async def append(self, turn: Turn) -> int:
        d = turn.to_dict()
        d.pop("seq", None)
        body = dumps(d)
        sid = turn.session_id
        keys = [self._sk(sid, "turns"), self._sk(sid, "seq"), self._sk(sid, "reqs"), self._sk(sid, "tomb")]
        async with self._io("append"):
            return int(
                await self._append(
                    keys=keys, args=[turn.request_id, body, self.max_turns, self.ttl_s, repr(float(turn.ts))]
                )
            )

    async def get_turns(self, session_id: str, after: int = 0, limit: int = 100) -> list[Turn]:
        if limit <= 0:
            return []
        after = max(0, int(after))
        async with self._io("get_turns"):
            raw = await self._page(keys=[self._sk(session_id, "turns")], args=[after, int(limit)])
        turns = [Turn.from_json(item) for item in raw]
        return [t for t in turns if t.seq > after][:limit]

    async def count_turns(self, session_id: str) -> int:
        async with self._io("count_turns"):
            return int(await self._r.llen(self._sk(session_id, "turns")))

    async def delete_session(self, session_id: str) -> bool:
        index = self._sk(session_id, "stkeys")
        async with self._io("delete_session"):
            owned = await self._r.smembers(index)
            keys = [self._sk(session_id, w) for w in ("turns", "seq", "reqs")]
            keys += [index, self._state_key(session_id)] + [self._state_key(k) for k in owned]
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.delete(*keys)
                pipe.set(self._sk(session_id, "tomb"), repr(time.time()), ex=self.ttl_s or None)
                deleted, _ = await pipe.execute()
            return int(deleted) > 0

    async def update_state(
        self, key: str, fn: Callable[[dict | None], dict], *, created_after: float | None = None
    ) -> dict:
        rkey = self._state_key(key)
        owner = state_owner(key)
        index = self._sk(owner, "stkeys") if STATE_SEP in key else None
        tomb = self._sk(owner, "tomb")
        ttl = self.ttl_s or None
        async with self._io("update_state"):
            for attempt in range(self.state_retries):
                try:
                    async with self._r.pipeline(transaction=True) as pipe:
                        await pipe.watch(rkey, tomb)
                        if created_after is not None:
                            deleted_at = await pipe.get(tomb)
                            if deleted_at is not None and created_after <= float(deleted_at):
                                raise SessionDeleted(f"session {owner!r} was deleted after this turn")
                        raw = await pipe.get(rkey)
                        new = fn(json.loads(raw) if raw is not None else None)
                        pipe.multi()
                        pipe.set(rkey, dumps(new), ex=ttl)
                        if index:
                            pipe.sadd(index, key)
                            if ttl:
                                pipe.expire(index, ttl)
                        await pipe.execute()
                        return new
                except rexc.WatchError:
                    await asyncio.sleep(random.uniform(0, min(0.05, 0.0005 * 2 ** min(attempt, 10))))
        raise StoreUnavailable(f"redis update_state: {key!r} still contended after {self.state_retries} attempts")

    async def get_state(self, key: str) -> dict | None:
        async with self._io("get_state"):
            raw = await self._r.get(self._state_key(key))
        return json.loads(raw) if raw is not None else None

    async def put_persona(self, name: str, data: dict) -> None:
        async with self._io("put_persona"):
            await self._r.hset(f"{self.prefix}personas", name, dumps(data))

    async def get_personas(self) -> dict[str, dict]:
        async with self._io("get_personas"):
            raw = await self._r.hgetall(f"{self.prefix}personas")
        return {name: json.loads(v) for name, v in raw.items()}

    async def delete_persona(self, name: str) -> bool:
        async with self._io("delete_persona"):
            return int(await self._r.hdel(f"{self.prefix}personas", name)) > 0

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._r.aclose()
