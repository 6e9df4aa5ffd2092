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
  {p}ix:{{p}idx}:...   the session index, one hash tag for all of it (app/store/redis_index.py)
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
from typing import TypedDict, cast

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff

from app.store.base import (
    REFUSED,
    STATE_SEP,
    SessionDeleted,
    StoreUnavailable,
    Turn,
    VersionConflict,
    dumps,
    state_owner,
)
from app.store.redis_index import RedisSessionIndex
from app.store.summary import SessionQuery

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

# KEYS: state, tomb, stkeys   ARGV: expected JSON ('' = absent), new JSON, ttl_s, created_after ('' = none), key
# Optimistic update as one script (works on a cluster too: all of a session's keys share its hash slot):
# 0 = the state changed meanwhile (retry), -1 = the session was deleted after `created_after`, 1 = written.
_CAS_STATE_LUA = """
if ARGV[4] ~= '' then
  local tomb = redis.call('GET', KEYS[2])
  if tomb and tonumber(ARGV[4]) <= tonumber(tomb) then return -1 end
end
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl) else redis.call('SET', KEYS[1], ARGV[2]) end
if KEYS[3] ~= KEYS[1] then
  redis.call('SADD', KEYS[3], ARGV[5])
  if ttl > 0 then redis.call('EXPIRE', KEYS[3], ttl) end
end
return 1
"""

# KEYS: the session's keys to delete..., tomb (last)   ARGV: now, ttl_s
_DELETE_LUA = """
local n = 0
for i = 1, #KEYS - 1 do n = n + redis.call('DEL', KEYS[i]) end
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('SET', KEYS[#KEYS], ARGV[1], 'EX', ttl) else redis.call('SET', KEYS[#KEYS], ARGV[1]) end
return n
"""

# KEYS: control   ARGV: expected version, new doc JSON, channel
_CAS_CONTROL_LUA = """
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if v ~= tonumber(ARGV[1]) then return -v - 1 end
redis.call('HSET', KEYS[1], 'version', v + 1, 'doc', ARGV[2])
redis.call('PUBLISH', ARGV[3], v + 1)
return v + 1
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
        self._r = connect(url, socket_timeout=socket_timeout, max_connections=max_connections)
        self.cluster = isinstance(self._r, RedisCluster)
        self._initialized = False
        self._init_lock = asyncio.Lock()
        self._append = self._r.register_script(_APPEND_LUA)
        self._page = self._r.register_script(_PAGE_LUA)
        self._cas_state = self._r.register_script(_CAS_STATE_LUA)
        self._delete = self._r.register_script(_DELETE_LUA)
        self._cas_control = self._r.register_script(_CAS_CONTROL_LUA)
        self.control_channel = f"{prefix}control"
        self.index = RedisSessionIndex(self._r, prefix, self.ttl_s)

    # keys
    def _sk(self, session_id: str, what: str) -> str:
        return f"{self.prefix}s:{{{session_id}}}:{what}"

    def _state_key(self, key: str) -> str:
        owner, sep, rest = key.partition(STATE_SEP)
        return f"{self.prefix}st:{{{owner}}}{sep}{rest}"

    @contextlib.asynccontextmanager
    async def _io(self, what: str) -> AsyncIterator[None]:
        try:
            if self.cluster and not self._initialized:
                await self._initialize()
            yield
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis {what}: {type(exc).__name__}: {exc}") from exc

    async def _initialize(self) -> None:
        # redis-py's async cluster client races when its first commands run concurrently (each starts the
        # topology discovery; connections get torn down under each other): discover once, in order.
        async with self._init_lock:
            if not self._initialized:
                await self._r.initialize()
                self._initialized = True

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
            seq = int(
                await self._append(
                    keys=keys, args=[turn.request_id, body, self.max_turns, self.ttl_s, repr(float(turn.ts))]
                )
            )
            if seq != REFUSED:
                # a second step on the index's shard; if it fails the append raises, and the retry (the spill's
                # replay) finds the turn stored (same seq) and folds it into the summary then, exactly once
                await self._index_turn(turn, seq)
            return seq

    async def _index_turn(self, turn: Turn, seq: int) -> None:
        try:
            await self.index.add_turn(turn, seq)
        except RuntimeError as exc:  # contended past the retries: an outage for the caller, retried later
            raise StoreUnavailable(f"redis index: {exc}") from exc

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
            owned = cast("set[str]", await self._r.smembers(index))  # decode_responses: str, not bytes
            keys = [self._sk(session_id, w) for w in ("turns", "seq", "reqs")]
            keys += [index, self._state_key(session_id)] + [self._state_key(k) for k in owned]
            deleted = await self._delete(
                keys=[*keys, self._sk(session_id, "tomb")], args=[repr(time.time()), self.ttl_s]
            )
            indexed = await self.index.remove(session_id)
            return int(deleted) > 0 or indexed

    # the session index (app/store/redis_index.py)
    async def session_summary(self, session_id: str) -> dict | None:
        async with self._io("session_summary"):
            return await self.index.summary(session_id)

    async def list_sessions(self, query: SessionQuery, cursor: str | None = None) -> tuple[list[dict], str | None]:
        async with self._io("list_sessions"):
            return await self.index.page(query, cursor)

    async def count_sessions(self, active_since: float) -> tuple[int, int]:
        async with self._io("count_sessions"):
            return await self.index.count(active_since)

    async def update_state(
        self, key: str, fn: Callable[[dict | None], dict], *, created_after: float | None = None
    ) -> dict:
        rkey = self._state_key(key)
        owner = state_owner(key)
        index = self._sk(owner, "stkeys") if STATE_SEP in key else rkey
        keys = [rkey, self._sk(owner, "tomb"), index]
        after = "" if created_after is None else repr(float(created_after))
        async with self._io("update_state"):
            for attempt in range(self.state_retries):
                raw = await self._r.get(rkey)
                new = fn(json.loads(raw) if raw is not None else None)
                written = int(await self._cas_state(keys=keys, args=[raw or "", dumps(new), self.ttl_s, after, key]))
                if written == 1:
                    return new
                if written == -1:
                    raise SessionDeleted(f"session {owner!r} was deleted after this turn")
                await asyncio.sleep(random.uniform(0, min(0.05, 0.0005 * 2 ** min(attempt, 10))))
        raise StoreUnavailable(f"redis update_state: {key!r} still contended after {self.state_retries} attempts")

    async def get_state(self, key: str) -> dict | None:
        async with self._io("get_state"):
            raw = await self._r.get(self._state_key(key))
        return json.loads(raw) if raw is not None else None

    # the control plane's document: {"personas": {...}, "adapters": {...}, "default": ...}, versioned
    async def get_control(self) -> tuple[int, dict]:
        async with self._io("get_control"):
            raw = await self._r.hgetall(f"{self.prefix}control")
        return int(raw.get("version", 0)), json.loads(raw["doc"]) if raw.get("doc") else {}

    async def cas_control(self, expected: int, doc: dict) -> int:
        async with self._io("cas_control"):
            result = int(
                await self._cas_control(
                    keys=[f"{self.prefix}control"], args=[expected, dumps(doc), self.control_channel]
                )
            )
        if result < 0:
            raise VersionConflict(-result - 1)
        return result

    async def watch_control(self) -> AsyncIterator[int]:
        """Versions as they are published (pub/sub); ends when the connection breaks (callers poll too)."""
        pubsub = self._r.pubsub()
        try:
            await pubsub.subscribe(self.control_channel)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield int(message["data"])
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._r.aclose()


class _ConnectionOptions(TypedDict):
    socket_timeout: float
    socket_connect_timeout: float
    decode_responses: bool


def connect(url: str, *, socket_timeout: float, max_connections: int) -> aioredis.Redis | RedisCluster:
    """A client for `url`: redis:// or rediss:// (one server), rediscluster://host:port[,host:port...] (a Redis
    Cluster, from its seed nodes), redis+sentinel://host:port[,host:port...]/<master name>[/db] (Sentinel)."""
    # Fail fast: two quick reconnect attempts (enough to get past connections a restarted server dropped), not
    # redis-py's default ten with up to 1 s backoff; the callers own the longer retries (circuit breaker, spill).
    retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=2)
    common = _ConnectionOptions(
        socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout, decode_responses=True
    )
    scheme, _, rest = url.partition("://")
    if scheme == "rediscluster":
        seeds = (n.partition(":") for n in rest.split("/")[0].split(","))
        nodes = [ClusterNode(host, int(port or 6379)) for host, _, port in seeds]
        return RedisCluster(startup_nodes=nodes, max_connections=max_connections, retry=retry, **common)
    if scheme == "redis+sentinel":
        hosts, _, path = rest.partition("/")
        name, _, db = path.partition("/")
        sentinels = [(h, int(p or 26379)) for h, _, p in (n.partition(":") for n in hosts.split(","))]
        return Sentinel(sentinels, **common).master_for(
            name or "mymaster", db=int(db or 0), retry=retry, max_connections=max_connections
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=max(socket_timeout * 5, 1.0), retry=retry, **common
    )
    return aioredis.Redis.from_pool(pool)
