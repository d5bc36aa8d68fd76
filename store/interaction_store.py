"""Redis state fed by ingest: user histories, purchased sets, item counters; idempotent per event.

A batch of events and their idempotency markers are written by one Lua script, so an event's
effects land together with its marker or not at all: replaying or redelivering changes nothing.
Every key of the batch is passed to the script, so on Redis Cluster a batch must share a slot.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import redis.asyncio as aioredis

from model.interaction import EventEffect, Interaction, kind_of
from store.redis_keys import RedisKeys, as_text

TRENDING_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
# Applied events are remembered in sets, one per hour of event time and slice of the id's hash:
# sets of up to 512 integers are compact intsets in Redis (set-max-intset-entries), which holds
# until ~8M events per hour of event time; past that the sets still work, at ~5x the memory.
DEDUP_BUCKET_MS = 3_600_000
DEDUP_BUCKETS = 16_384


class Applied(Enum):
    """What applying one event did."""

    NEW = 1  # its effects are written now
    DUPLICATE = 0  # it had been applied before: nothing written
    UNUSABLE_KEYS = -1  # a key of its user holds another type: nothing written


@dataclass(frozen=True, slots=True)
class PartitionAdvance:
    """A batch's last offset on one source partition ("topic:partition"), written with its
    effects, and the offset Redis must hold for it now (None: none; "*": not checked)."""

    partition: str
    expected: int | str | None
    applied: int


class AppliedOffsetsMovedError(Exception):
    """Redis holds another applied offset than the worker expects: nothing was written."""


def event_fingerprint(event_id: str) -> tuple[int, int]:
    """(bucket, 64-bit fingerprint) of an event id: the idempotency record is the fingerprint
    in its bucket's set, 13-21 bytes an event at 200k-500k events an hour where a key per event
    id took 133-145 (bench/redis_memory.py). Two ids clash only if 78 hash bits agree within
    one hour of event time (~1e-11 at 2M events/hour)."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=10).digest()
    bucket = int.from_bytes(digest[:2], "little") % DEDUP_BUCKETS
    return bucket, int.from_bytes(digest[2:], "little", signed=True)


# One call applies a whole batch. KEYS: item_clicks, item_orders, item_units, stats, trending,
# applied offsets, then per event: seen bucket, history, purchased. ARGV: dedup ttl,
# history_len, user ttl, counters kept, n_partitions, (partition, expected, applied)..., then
# per event: fingerprint, n_history, (ts_ms, entry)..., n_clicks,
# (item, count)..., n_orders, (item, units)..., n_trending, (item, weight)... Returns per
# event 1 (applied), 0 (applied before) or -1 (a key of its user holds another type: nothing
# written, not even its record, so no error after a write leaves an event half applied).
# An event is new when its fingerprint joins its bucket (SADD answers 1). A history stays
# newest first by event time even when older events arrive late (a replay after newer ones):
# those are inserted in place, and one older than every kept entry is kept only while the
# history has room. A user's keys live `user ttl` seconds past their last event. An item
# counter that reaches twice `counters kept` entries is cut back to its `counters kept`
# highest (the popular ones). Each partition's applied offset is written with the effects;
# when one Redis holds differs from what the worker expects (Redis came back from an older
# snapshot, or another worker moved it), nothing is written and the answer is {-2}.
_APPLY_EVENTS = """
local ttl, cap, user_ttl = ARGV[1], tonumber(ARGV[2]) - 1, ARGV[3]
local function ts_of(entry)
  local ok, decoded = pcall(cjson.decode, entry)
  if ok and type(decoded) == 'table' then return tonumber(decoded['ts_ms']) or 0 end
  return 0
end
local function holds(key, kind)
  local found = redis.call('TYPE', key)['ok']
  return found == 'none' or found == kind
end
if not (holds(KEYS[1], 'zset') and holds(KEYS[2], 'zset') and holds(KEYS[3], 'zset')
    and holds(KEYS[4], 'hash') and holds(KEYS[5], 'zset') and holds(KEYS[6], 'hash')) then
  return redis.error_reply('WRONGTYPE a counter key of the namespace holds another type')
end
local n_partitions = tonumber(ARGV[5])
for p = 0, n_partitions - 1 do
  local expected = ARGV[7 + 3 * p]
  if expected ~= '*' and (redis.call('HGET', KEYS[6], ARGV[6 + 3 * p]) or '') ~= expected then
    return {-2}
  end
end
local function push(history, ts, entry)
  local head = redis.call('LINDEX', history, 0)
  if not head or ts >= ts_of(head) then
    redis.call('LPUSH', history, entry)
    return
  end
  local kept = redis.call('LRANGE', history, 0, cap)
  for i = 2, #kept do
    if ts >= ts_of(kept[i]) then
      redis.call('LINSERT', history, 'BEFORE', kept[i], entry)
      return
    end
  end
  if #kept <= cap then redis.call('RPUSH', history, entry) end
end
local applied, duplicates, out = 0, 0, {}
local a = 6 + 3 * n_partitions
for e = 0, (#KEYS - 6) / 3 - 1 do
  local seen, history, purchased = KEYS[7 + 3 * e], KEYS[8 + 3 * e], KEYS[9 + 3 * e]
  local usable = holds(seen, 'set') and holds(history, 'list') and holds(purchased, 'set')
  local fresh = false
  if usable then
    fresh = redis.call('SADD', seen, ARGV[a]) == 1
    redis.call('EXPIRE', seen, ttl)
  end
  a = a + 1
  out[e + 1] = usable and (fresh and 1 or 0) or -1
  local n = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n do
    if fresh then push(history, tonumber(ARGV[a]), ARGV[a + 1]) end
    a = a + 2
  end
  if fresh and n > 0 then
    redis.call('LTRIM', history, 0, cap)
    redis.call('EXPIRE', history, user_ttl)
  end
  n = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n do
    if fresh then redis.call('ZINCRBY', KEYS[1], ARGV[a + 1], ARGV[a]) end
    a = a + 2
  end
  n = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n do
    if fresh then
      redis.call('ZINCRBY', KEYS[2], 1, ARGV[a])
      redis.call('ZINCRBY', KEYS[3], ARGV[a + 1], ARGV[a])
      redis.call('SADD', purchased, ARGV[a])
      redis.call('EXPIRE', purchased, user_ttl)
    end
    a = a + 2
  end
  n = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n do
    if fresh then redis.call('ZINCRBY', KEYS[5], ARGV[a + 1], ARGV[a]) end
    a = a + 2
  end
  if fresh then applied = applied + 1 elseif usable then duplicates = duplicates + 1 end
end
local kept = tonumber(ARGV[4])
for _, counter in ipairs({KEYS[1], KEYS[2], KEYS[3], KEYS[5]}) do
  if redis.call('ZCARD', counter) >= 2 * kept then
    redis.call('ZREMRANGEBYRANK', counter, 0, -(kept + 1))
  end
end
if applied > 0 then redis.call('HINCRBY', KEYS[4], 'applied', applied) end
if duplicates > 0 then redis.call('HINCRBY', KEYS[4], 'duplicates', duplicates) end
for p = 0, n_partitions - 1 do
  local field, offset = ARGV[6 + 3 * p], tonumber(ARGV[8 + 3 * p])
  if offset > (tonumber(redis.call('HGET', KEYS[6], field)) or -1) then
    redis.call('HSET', KEYS[6], field, offset)
  end
end
return out
"""


def _entries(raw: Sequence[bytes | str]) -> list[HistoryEntry]:
    docs = [json.loads(r) for r in raw]
    return [
        HistoryEntry(d["item_id"], d["kind"], int(d["ts_ms"]), d.get("event_id", "")) for d in docs
    ]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One remembered interaction of a user."""

    item_id: str
    kind: str
    ts_ms: int
    event_id: str = ""

    def interaction(self, user_id: str) -> Interaction:
        """As a model `Interaction` (what the user tower reads)."""
        return Interaction(user_id, self.item_id, kind_of(self.kind), self.ts_ms)


@dataclass(frozen=True, slots=True)
class IngestStats:
    """Counters of what ingest did."""

    applied: int
    duplicates: int
    dead_lettered: int


class RedisInteractionStore:
    """Applies event effects exactly once and reads them back."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: RedisKeys,
        *,
        history_len: int = 200,
        dedup_ttl_s: int = 7 * 24 * 3600,
        trending_half_life_s: float = 3 * 24 * 3600,
        user_ttl_s: int = 90 * 24 * 3600,
        counters_kept: int = 100_000,
    ) -> None:
        if min(history_len, dedup_ttl_s, user_ttl_s, counters_kept) < 1 or (
            trending_half_life_s <= 0
        ):
            raise ValueError(
                "history_len, dedup_ttl_s, user_ttl_s, counters_kept and trending_half_life_s "
                "must be positive"
            )
        self._counters_kept = counters_kept
        self._trending_half_life_ms = trending_half_life_s * 1000
        self._client = client
        self._keys = keys
        self._history_len = history_len
        self._dedup_ttl_s = dedup_ttl_s
        self._user_ttl_s = user_ttl_s
        self._apply = client.register_script(_APPLY_EVENTS)

    def _event_args(self, effect: EventEffect, keys: list[str], args: list[str | int]) -> None:
        bucket, fingerprint = event_fingerprint(effect.event_id)
        keys += [
            self._keys.seen_events(effect.ts_ms // DEDUP_BUCKET_MS, bucket),
            self._keys.history(effect.user_id),
            self._keys.purchased(effect.user_id),
        ]
        args.append(fingerprint)
        clicks: Counter[str] = Counter()
        units: Counter[str] = Counter()
        trending: dict[str, float] = defaultdict(float)
        history: list[str | int] = []
        for it in effect.interactions:
            trending[it.item_id] += self.trending_weight(it.ts_ms)
            entry = {
                "item_id": it.item_id,
                "kind": it.kind,
                "ts_ms": it.ts_ms,
                "event_id": effect.event_id,
            }
            history += [it.ts_ms, json.dumps(entry, separators=(",", ":"))]
            if it.kind == "click":
                clicks[it.item_id] += 1
            else:
                units[it.item_id] += it.quantity
        args += [len(history) // 2, *history]
        for counts in (clicks, units):
            args.append(len(counts))
            for item_id, count in counts.items():
                args += [item_id, count]
        args.append(len(trending))
        for item_id, weight in trending.items():
            args += [item_id, repr(weight)]

    def trending_weight(self, ts_ms: int) -> float:
        """2^(age since 2026 in half-lives): a newer event outweighs an older one, so the
        sorted set ranks by exponentially decayed popularity without ever rewriting old
        scores. Doubles hold this until about 2026 + 1000 half-lives (~8 years at 3 days);
        past that the scores need rebasing."""
        exponent = (ts_ms - TRENDING_EPOCH_MS) / self._trending_half_life_ms
        return float(2.0 ** max(-1000.0, min(1000.0, exponent)))

    async def apply_many(
        self, effects: Sequence[EventEffect], advances: Sequence[PartitionAdvance] = ()
    ) -> list[Applied]:
        """Apply each effect once, atomically with its idempotency marker and the batch's
        partition offsets: what became of each (`Applied.UNUSABLE_KEYS`: nothing written for
        it; the rest of the batch is applied). Raises `AppliedOffsetsMovedError` (nothing written)
        when an offset Redis holds is not the one expected."""
        if not effects and not advances:
            return []
        k = self._keys
        keys = [k.item_clicks, k.item_orders, k.item_units, k.stats, k.item_trending]
        keys.append(k.applied_offsets)
        args: list[str | int] = [
            self._dedup_ttl_s,
            self._history_len,
            self._user_ttl_s,
            self._counters_kept,
            len(advances),
        ]
        for advance in advances:
            expected = "" if advance.expected is None else str(advance.expected)
            args += [advance.partition, expected, advance.applied]
        for effect in effects:
            self._event_args(effect, keys, args)
        results = await self._apply(keys=keys, args=args)
        if results and int(results[0]) == -2:
            raise AppliedOffsetsMovedError(
                "Redis holds other applied offsets than expected for "
                + ", ".join(a.partition for a in advances)
            )
        return [Applied(int(r)) for r in results]

    async def applied_offsets(self, partitions: Sequence[str]) -> dict[str, int]:
        """The last applied offset Redis holds for each of `partitions` ("topic:partition")
        that has one."""
        if not partitions:
            return {}
        values = await self._client.hmget(self._keys.applied_offsets, list(partitions))
        return {p: int(v) for p, v in zip(partitions, values, strict=True) if v is not None}

    async def was_dead_lettered(self, source: str) -> bool:
        """Whether the message at `source` (topic/partition/offset) already went to the DLQ."""
        return bool(await self._client.exists(self._keys.dead_lettered(source)))

    async def mark_dead_lettered(self, source: str) -> None:
        """Record that the message at `source` is in the DLQ, and count it."""
        pipe = self._client.pipeline(transaction=True)
        pipe.set(self._keys.dead_lettered(source), "1", ex=self._dedup_ttl_s)
        pipe.hincrby(self._keys.stats, "dead_lettered", 1)
        await pipe.execute()

    async def history(self, user_id: str, limit: int | None = None) -> list[HistoryEntry]:
        """The user's recent interactions, newest first."""
        end = -1 if limit is None else limit - 1
        raw = await self._client.lrange(self._keys.history(user_id), 0, end)
        return _entries(raw)

    async def histories(self, user_ids: Sequence[str], limit: int) -> dict[str, list[HistoryEntry]]:
        """The newest `limit` interactions of each user (newest first), in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.lrange(self._keys.history(user_id), 0, limit - 1)
        raws = await pipe.execute()
        return {u: _entries(raw) for u, raw in zip(user_ids, raws, strict=True)}

    async def purchased(self, user_id: str) -> set[str]:
        """Items the user has ordered."""
        members = await self._client.smembers(self._keys.purchased(user_id))
        return {as_text(m) for m in members}

    async def user_context(self, user_id: str, limit: int) -> tuple[list[HistoryEntry], set[str]]:
        """`history(user_id, limit)` and `purchased(user_id)` in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        pipe.lrange(self._keys.history(user_id), 0, limit - 1)
        pipe.smembers(self._keys.purchased(user_id))
        raw, members = await pipe.execute()
        return _entries(raw), {as_text(m) for m in members}

    async def top_items(self, counter: str, n: int | None = 10) -> list[tuple[str, float]]:
        """Top `n` items (all when None) by `counter`: clicks, orders, units or trending."""
        keys = {"clicks": self._keys.item_clicks, "orders": self._keys.item_orders}
        keys["units"] = self._keys.item_units
        keys["trending"] = self._keys.item_trending
        end = -1 if n is None else n - 1
        pairs = await self._client.zrevrange(keys[counter], 0, end, withscores=True)
        return [(as_text(pair[0]), float(pair[1])) for pair in pairs]

    async def stats(self) -> IngestStats:
        """What ingest has done so far."""
        raw = await self._client.hgetall(self._keys.stats)
        values = {as_text(k): int(v) for k, v in raw.items()}
        return IngestStats(
            applied=values.get("applied", 0),
            duplicates=values.get("duplicates", 0),
            dead_lettered=values.get("dead_lettered", 0),
        )
