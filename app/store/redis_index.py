"""The session index in Redis (see app/store/summary.py for the record, the query and the cursor).

All index keys share one hash tag, `{<prefix>idx}`, so the index is one shard of a Redis Cluster and every script
below runs on one node (a session's own keys stay spread by their `{sid}` tags). Layout, with
B = "<prefix>ix:{<prefix>idx}:":
  B sum            hash session id -> summary JSON
  B recent         zset session id, score = last activity (unix seconds)
  B drift          zset session id, score = drift score after the last scored turn (NO_DRIFT when none)
  B alert          zset of the sessions in drift alarm, score = last activity
  B a:<adapter>    zset per last adapter, B p:<persona>, B l:<last tone label>, B o:<owner key id>: score = activity
  B snap:<scope>:<id>   a listing's snapshot (zset, in listing order), expires after SNAPSHOT_TTL_S
Every write refreshes the index keys' TTL to the sessions' TTL, and sessions whose last activity is older than the
TTL (their turns have expired) are pruned from the index in small batches on the write path and skipped on reads.
A filtered listing intersects the per-filter sets with `recent` (Redis walks the smallest set first), so its cost
follows the matching sessions, not all sessions. Needs Redis >= 6.2 (ZRANGESTORE, ZDIFFSTORE).

Memory per session (measured by bench/sessions_index.py): the summary JSON plus one entry in each of 4-7 zsets.
"""

from __future__ import annotations

import json
import time
from typing import Any

from app.store import summary as idx
from app.store.base import Turn, dumps

PRUNE_EVERY_S = 30.0
PRUNE_BATCH = 200

# KEYS: sum, recent, drift, alert, n_old old member sets..., new member sets...
# ARGV: sid, expected summary JSON ('' = absent), new JSON, last_ts, drift score, alerting '1'|'0', n_old, ttl_s
_UPDATE_LUA = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (cur or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local ts = tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], ts, ARGV[1])
redis.call('ZADD', KEYS[3], tonumber(ARGV[5]), ARGV[1])
if ARGV[6] == '1' then redis.call('ZADD', KEYS[4], ts, ARGV[1]) else redis.call('ZREM', KEYS[4], ARGV[1]) end
local n_old = tonumber(ARGV[7])
for i = 5, 4 + n_old do redis.call('ZREM', KEYS[i], ARGV[1]) end
for i = 5 + n_old, #KEYS do redis.call('ZADD', KEYS[i], ts, ARGV[1]) end
local ttl = tonumber(ARGV[8])
if ttl > 0 then for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end end
return 1
"""

# KEYS: sum, recent, drift, alert, member sets...   ARGV: sid, expected summary JSON
_REMOVE_LUA = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (cur or '') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 1
"""

# KEYS: snap, recent, drift, alert, filter sets...   ARGV: lo, hi (activity bounds), alerting ''|'1'|'0', order, ttl
_SNAPSHOT_LUA = """
local snap = KEYS[1]
if #KEYS > 4 then
  local args = {'ZINTERSTORE', snap, #KEYS - 3, KEYS[2]}
  for i = 5, #KEYS do args[#args + 1] = KEYS[i] end
  args[#args + 1] = 'WEIGHTS'
  args[#args + 1] = 1
  for i = 5, #KEYS do args[#args + 1] = 0 end
  redis.call(unpack(args))
  redis.call('ZREMRANGEBYSCORE', snap, '-inf', '(' .. ARGV[1])
  redis.call('ZREMRANGEBYSCORE', snap, '(' .. ARGV[2], '+inf')
else
  redis.call('ZRANGESTORE', snap, KEYS[2], ARGV[1], ARGV[2], 'BYSCORE')
end
if ARGV[3] == '0' then redis.call('ZDIFFSTORE', snap, 2, snap, KEYS[4]) end
if ARGV[4] == 'drift' then redis.call('ZINTERSTORE', snap, 2, snap, KEYS[3], 'WEIGHTS', 0, 1) end
redis.call('EXPIRE', snap, tonumber(ARGV[5]))
return redis.call('ZCARD', snap)
"""

# KEYS: snap, sum   ARGV: offset, limit. Ids from the snapshot (highest score first), each with its current summary.
_PAGE_LUA = """
local ids = redis.call('ZREVRANGE', KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[1]) + tonumber(ARGV[2]) - 1)
if #ids == 0 then return {} end
local rows = redis.call('HMGET', KEYS[2], unpack(ids))
local out = {}
for i = 1, #ids do out[i] = rows[i] or '' end
return out
"""


class RedisSessionIndex:
    def __init__(self, client: Any, prefix: str, ttl_s: int):
        self._r = client
        self.ttl_s = int(ttl_s)
        self.base = f"{prefix}ix:{{{prefix}idx}}:"
        self._update = client.register_script(_UPDATE_LUA)
        self._remove = client.register_script(_REMOVE_LUA)
        self._snapshot = client.register_script(_SNAPSHOT_LUA)
        self._page = client.register_script(_PAGE_LUA)
        self._pruned_at = 0.0

    def key(self, what: str) -> str:
        return self.base + what

    def _fixed(self) -> list[str]:
        return [self.key("sum"), self.key("recent"), self.key("drift"), self.key("alert")]

    def _members(self, summary: dict[str, Any] | None) -> list[str]:
        """The per-value sets a summary belongs to."""
        if not summary:
            return []
        keys = [self.key(f"a:{summary['adapter']}")]
        for tag, field in (("p", "persona"), ("l", "label"), ("o", "owner")):
            if summary.get(field):
                keys.append(self.key(f"{tag}:{summary[field]}"))
        return keys

    # ---- writes (called by RedisStore inside its own error mapping) -------------------------------------------
    async def add_turn(self, turn: Turn, seq: int, retries: int = 200) -> None:
        """Fold the appended turn into its session's summary and move the session between the sets (optimistic:
        retried when another replica changed the summary meanwhile). A replayed turn changes nothing."""
        sid = turn.session_id
        for _ in range(retries):
            raw = await self._r.hget(self.key("sum"), sid)
            old = json.loads(raw) if raw else None
            new = idx.fold(old, turn, seq)
            if new is None:
                return
            old_keys, new_keys = self._members(old), self._members(new)
            args = [sid, raw or "", dumps(new), new["last_ts"], idx.drift_score(new)]
            args += ["1" if idx.alerting(new) else "0", len(old_keys), self.ttl_s]
            if int(await self._update(keys=[*self._fixed(), *old_keys, *new_keys], args=args)):
                break
        else:
            raise RuntimeError(f"session index for {sid!r} still contended after {retries} attempts")
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            await self.prune(time.time() - self.ttl_s)

    async def remove(self, session_id: str) -> bool:
        for _ in range(200):
            raw = await self._r.hget(self.key("sum"), session_id)
            if raw is None:
                # a summary-less entry (a half-pruned one) still leaves the ordered sets
                await self._remove(keys=self._fixed(), args=[session_id, ""])
                return False
            keys = [*self._fixed(), *self._members(json.loads(raw))]
            if int(await self._remove(keys=keys, args=[session_id, raw])):
                return True
        return False

    async def prune(self, older_than: float) -> int:
        """Drop sessions whose last activity is before `older_than` (their turns have expired with the TTL)."""
        if self.ttl_s <= 0:
            return 0
        stale = await self._r.zrangebyscore(self.key("recent"), "-inf", f"({older_than!r}", start=0, num=PRUNE_BATCH)
        for sid in stale:
            await self.remove(sid)
        return len(stale)

    # ---- reads --------------------------------------------------------------------------------------------------
    async def summary(self, session_id: str) -> dict[str, Any] | None:
        raw = await self._r.hget(self.key("sum"), session_id)
        return json.loads(raw) if raw else None

    async def page(self, query: idx.SessionQuery, cursor: str | None) -> tuple[list[dict], str | None]:
        if cursor is None:
            snapshot, offset = idx.new_snapshot_id(), 0
            filters = self._filters(query)
            lo = max(query.since or 0.0, time.time() - self.ttl_s if self.ttl_s > 0 else 0.0)
            hi = "+inf" if query.until is None else repr(float(query.until))
            alert_arg = "" if query.alerting is None else ("1" if query.alerting else "0")
            await self._snapshot(
                keys=[self._snap_key(query, snapshot), *self._fixed()[1:], *filters],
                args=[repr(float(lo)), hi, alert_arg, query.order, idx.SNAPSHOT_TTL_S],
            )
        else:
            snapshot, offset = idx.decode_cursor(cursor)
            if not await self._r.exists(self._snap_key(query, snapshot)):
                raise idx.InvalidCursor("cursor expired or was issued for another query scope: list again")
        snap = self._snap_key(query, snapshot)
        raw = await self._page(keys=[snap, self.key("sum")], args=[offset, query.limit + 1])
        more = len(raw) > query.limit
        rows = [json.loads(r) for r in raw[: query.limit] if r]  # '' = deleted since the walk began
        if not more:
            await self._r.delete(snap)
            return rows, None
        return rows, idx.encode_cursor(snapshot, offset + query.limit)

    def _filters(self, query: idx.SessionQuery) -> list[str]:
        keys = []
        if query.alerting:
            keys.append(self.key("alert"))
        for tag, value in (("o", query.owner), ("a", query.adapter), ("p", query.persona), ("l", query.label)):
            if value is not None:
                keys.append(self.key(f"{tag}:{value}"))
        return keys

    def _snap_key(self, query: idx.SessionQuery, snapshot: str) -> str:
        return self.key(f"snap:{query.scope}:{snapshot}")

    async def count(self, active_since: float) -> tuple[int, int]:
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.zcount(self.key("recent"), repr(float(active_since)), "+inf")
            pipe.zcount(self.key("alert"), repr(float(active_since)), "+inf")
            active, drifting = await pipe.execute()
        return int(active), int(drifting)
