"""Redis state fed by ingest: user histories, purchased sets, item counters; idempotent per event.

A batch of events and their idempotency markers are written by one Lua script, so an event's
effects land together with its marker or not at all: replaying or redelivering changes nothing.
On a Redis Cluster the state is split into shards by user (see `RedisKeys`): each shard holds
its users' keys, idempotency records, item counters, stats and applied offsets in one slot, a
batch runs one script per shard, and counters and stats are summed over the shards on read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from functools import partial

import msgspec
import redis
import redis.asyncio as aioredis

from model.interaction import EventEffect, Interaction, kind_of
from store.redis_keys import RedisKeys, as_text

TRENDING_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
# Applied events are remembered per event_id, whatever their event time: an event's record is
# two 64-bit fingerprints (its id's and its id-and-content's) in a set chosen by the id's hash,
# one set family per period of processing time as long as the idempotency horizon
# (RECSTREAM_DEDUP_TTL_S). Lookups read the period before the current one too, so a record is
# found for at least one horizon after it was written (at most two, then the set expires), and
# within `CLOCK_SKEW_ALLOWED_S` of a period's end the next one, for workers whose clocks are
# ahead. Sets of up to 512 integers are compact intsets (set-max-intset-entries): 65,536
# buckets hold ~16M events a period that way.
DEDUP_BUCKETS = 65_536
CLOCK_SKEW_ALLOWED_S = 3_600  # between workers' clocks, for the period a record goes to
# A batch is applied in scripts of at most this much work (an event counts one, plus one per
# interaction), so no script holds Redis for long, whatever a producer sends: ~6 ms for 500
# clicks' worth on a 2-core machine, ~10 ms for one 500-line order, which cannot be split
# (bench/hostile_batch.py); a batch of 500 clicks takes two scripts.
MAX_WORK_PER_SCRIPT = 500
_MSGPACK = msgspec.msgpack.Encoder()


class Applied(Enum):
    """What applying one event did."""

    NEW = 1  # its effects are written now
    DUPLICATE = 0  # it had been applied before: nothing written
    UNUSABLE_KEYS = -1  # a key of its user holds another type: nothing written
    CONFLICT = -3  # its event_id was applied before with other content: nothing written


@dataclass(frozen=True, slots=True)
class PartitionAdvance:
    """A batch's last offset on one source partition ("topic/partition"), written with its
    effects, and the offset Redis must hold for it now (None: none; "*": not checked)."""

    partition: str
    expected: int | str | None
    applied: int


class AppliedOffsetsMovedError(Exception):
    """Redis holds another applied offset than the worker expects: nothing was written."""


def event_fingerprint(event_id: str) -> tuple[int, int]:
    """(bucket, 64-bit fingerprint) of an event id. Two ids clash only if 80 hash bits agree
    within one horizon (~1e-9 at 50M events a horizon)."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=10, person=b"event-id").digest()
    bucket = int.from_bytes(digest[:2], "little") % DEDUP_BUCKETS
    return bucket, int.from_bytes(digest[2:], "little", signed=True)


def content_fingerprint(effect: EventEffect) -> int:
    """64-bit fingerprint of an event's id and content (user, items, kinds, times, units):
    the same id with other content is a conflict, not a duplicate."""
    parts = [effect.event_id, effect.user_id]
    for it in effect.interactions:
        parts += [it.item_id, it.kind, str(it.ts_ms), str(it.quantity)]
    digest = hashlib.blake2b(
        "\x1f".join(parts).encode(), digest_size=8, person=b"event-content"
    ).digest()
    return int.from_bytes(digest, "little", signed=True)


# Printable ASCII but the quote and the backslash: text json.dumps writes as it is.
_PLAIN_JSON_TEXT = re.compile(r"[ !#-\[\]-~]*")


def history_member(event_id: str, line: int, it: Interaction) -> str:
    """A history entry as a sorted-set member, unique per (event, line): applying an event
    again adds nothing. Equal times sort by event id, then line (`line` is zero-padded so a
    later line of an order reads as newer, as the trainer's history has it). Plain ids are
    formatted directly, byte for byte what `json.dumps` gives, at a fifth of its cost."""
    plain = _PLAIN_JSON_TEXT.fullmatch
    if plain(event_id) and plain(it.item_id) and plain(it.kind) and type(it.ts_ms) is int:
        return (
            f'{{"event_id":"{event_id}","n":"{line:03d}","item_id":"{it.item_id}",'
            f'"kind":"{it.kind}","ts_ms":{it.ts_ms}}}'
        )
    entry = {
        "event_id": event_id,
        "n": f"{line:03d}",
        "item_id": it.item_id,
        "kind": it.kind,
        "ts_ms": it.ts_ms,
    }
    return json.dumps(entry, separators=(",", ":"))


# One call applies a part of a batch. KEYS: item_clicks, item_orders, item_units, stats,
# trending, applied offsets, then per event: records of the previous, current and next period
# (its bucket; the next is the current again far from a period's end), history, purchased.
# ARGV: records' expiry (unix s), history_len, user ttl,
# counters kept, n_partitions, purchased kept, (partition, expected, applied)..., then the
# events as one MessagePack array (one argument, so the client packs one string, not ~20 per
# event, and the script reads strings without unescaping them) of [id fingerprint, content
# fingerprint, [ts_ms, member, ...], [item, clicks, ...], order time, [item, units, ...],
# [item, trending weight, ...]], fingerprints as text (Lua numbers are doubles).
# Returns per event 1 (applied), 0 (applied before), -3 (its id was applied before with other
# content: not counted here, the worker dead-letters it) or -1 (a key of its user holds
# another type: nothing written, not even its record, so no error after a write leaves an
# event half applied; the records' keys are not checked: an error there comes before any
# write of its event, and the events before it stay whole).
# A history is a sorted set by event time, cut to its newest `history_len`: an insert is
# O(log n) wherever its time falls, in one ZADD per event; a list left by an older version is
# turned into one when its user next gets an event. Purchased items are a sorted set by last
# order time, cut to the newest `purchased kept` (an older version's set is turned into one
# likewise). A user's keys live `user ttl` seconds past their last event. An item counter
# that reaches twice `counters kept` entries is cut back towards its `counters kept` highest
# (the popular ones), by at most 1,000 a script. Each partition's applied offset is written
# with the effects; when one Redis holds differs from what the worker expects (Redis came
# back from an older snapshot, or another worker moved it), nothing is written and the answer
# is {-2}, unless it holds this very advance already (a retry of a call whose reply was lost,
# or of a batch some of whose shards were written).
_APPLY_EVENTS = """
local expire_at, cap, user_ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local purchased_cap = tonumber(ARGV[6])
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
  local expected = ARGV[8 + 3 * p]
  local held = redis.call('HGET', KEYS[6], ARGV[7 + 3 * p]) or ''
  if expected ~= '*' and held ~= expected and held ~= ARGV[9 + 3 * p] then
    return {-2}
  end
end
local function migrate(history)
  local legacy = redis.call('LRANGE', history, 0, cap - 1)
  redis.call('DEL', history)
  for _, entry in ipairs(legacy) do
    local ok, decoded = pcall(cjson.decode, entry)
    local ts = ok and type(decoded) == 'table' and tonumber(decoded['ts_ms']) or 0
    redis.call('ZADD', history, ts, entry)
  end
end
local function recorded(records, member)
  for _, key in ipairs(records) do
    if redis.call('SISMEMBER', key, member) == 1 then return true end
  end
  return false
end
local applied, duplicates, out = 0, 0, {}
local events = cmsgpack.unpack(ARGV[7 + 3 * n_partitions])
for e, event in ipairs(events) do
  local k = 7 + 5 * (e - 1)
  local records = {KEYS[k], KEYS[k + 1]}
  if KEYS[k + 2] ~= KEYS[k + 1] then records[3] = KEYS[k + 2] end
  local history, purchased = KEYS[k + 3], KEYS[k + 4]
  local id, content, lines, clicks, bought_at, units, trending = unpack(event)
  local history_type = redis.call('TYPE', history)['ok']
  local purchased_type = #units > 0 and redis.call('TYPE', purchased)['ok'] or 'none'
  local usable = (purchased_type == 'none' or purchased_type == 'zset' or purchased_type == 'set')
    and (history_type == 'none' or history_type == 'zset' or history_type == 'list')
  local fresh, outcome = false, -1
  if usable then
    if not recorded(records, id) then
      fresh, outcome = true, 1
      redis.call('SADD', records[2], id, content)
      redis.call('EXPIREAT', records[2], expire_at)
    elseif recorded(records, content) then
      outcome = 0
    else
      outcome = -3
    end
  end
  out[e] = outcome
  if fresh and #lines > 0 then
    if history_type == 'list' then migrate(history) end
    redis.call('ZADD', history, unpack(lines))
    if redis.call('ZCARD', history) > cap then
      redis.call('ZREMRANGEBYRANK', history, 0, -(cap + 1))
    end
    redis.call('EXPIRE', history, user_ttl)
  end
  if fresh then
    for i = 1, #clicks, 2 do redis.call('ZINCRBY', KEYS[1], clicks[i + 1], clicks[i]) end
  end
  if fresh and #units > 0 then
    if purchased_type == 'set' then
      local legacy = redis.call('SMEMBERS', purchased)
      redis.call('DEL', purchased)
      for _, item in ipairs(legacy) do redis.call('ZADD', purchased, 0, item) end
    end
    local bought = {}
    for i = 1, #units, 2 do
      local item = units[i]
      redis.call('ZINCRBY', KEYS[2], 1, item)
      redis.call('ZINCRBY', KEYS[3], units[i + 1], item)
      bought[i], bought[i + 1] = bought_at, item
    end
    redis.call('ZADD', purchased, 'GT', unpack(bought))
    if redis.call('ZCARD', purchased) > purchased_cap then
      redis.call('ZREMRANGEBYRANK', purchased, 0, -(purchased_cap + 1))
    end
    redis.call('EXPIRE', purchased, user_ttl)
  end
  if fresh then
    for i = 1, #trending, 2 do
      redis.call('ZINCRBY', KEYS[5], trending[i + 1], trending[i])
    end
  end
  if outcome == 1 then applied = applied + 1
  elseif outcome == 0 then duplicates = duplicates + 1 end
end
local kept = tonumber(ARGV[4])
for _, counter in ipairs({KEYS[1], KEYS[2], KEYS[3], KEYS[5]}) do
  local size = redis.call('ZCARD', counter)
  if size >= 2 * kept then
    redis.call('ZREMRANGEBYRANK', counter, 0, math.min(size - kept, 1000) - 1)
  end
end
if applied > 0 then redis.call('HINCRBY', KEYS[4], 'applied', applied) end
if duplicates > 0 then redis.call('HINCRBY', KEYS[4], 'duplicates', duplicates) end
for p = 0, n_partitions - 1 do
  local field, offset = ARGV[7 + 3 * p], tonumber(ARGV[9 + 3 * p])
  if offset > (tonumber(redis.call('HGET', KEYS[6], field)) or -1) then
    redis.call('HSET', KEYS[6], field, offset)
  end
end
return out
"""

# A message's dead-letter mark (KEYS[1], kept ARGV[1] seconds) and its count in the stats
# (KEYS[2]), together: a mark is never left uncounted.
_MARK_DEAD_LETTERED = """
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return redis.call('HINCRBY', KEYS[2], 'dead_lettered', 1)
"""


async def _or_legacy(raw: object, legacy: Callable[[], Awaitable[object]]) -> object:
    """A pipeline reply (taken with raise_on_error=False), or where it is WRONGTYPE, what
    `legacy` reads: the key still has the type an older version gave it (a user's keys are
    migrated by the apply script at their next event)."""
    if isinstance(raw, redis.ResponseError):
        if not str(raw).startswith("WRONGTYPE"):
            raise raw
        return await legacy()
    return raw


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


# Every member of a history decoded as one JSON array: a tenth of the cost of a json.loads
# per member (50 members: 32 vs 320 us), paid by each request and each user re-embedded.
# Lax: a time stored as text or a whole float is read as the int it was; unknown fields
# (the line number "n") are skipped.
_HISTORY = msgspec.json.Decoder(list[HistoryEntry], strict=False)


def history_entries(raw: Sequence[bytes | str]) -> list[HistoryEntry]:
    """History entries from sorted-set or list members (JSON objects), in their order."""
    if not raw:
        return []
    members = [m if isinstance(m, bytes) else m.encode() for m in raw]
    return _HISTORY.decode(b"[" + b",".join(members) + b"]")


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
        purchased_kept: int = 1_000,
    ) -> None:
        if min(history_len, dedup_ttl_s, user_ttl_s, counters_kept, purchased_kept) < 1 or (
            trending_half_life_s <= 0
        ):
            raise ValueError(
                "history_len, dedup_ttl_s, user_ttl_s, counters_kept, purchased_kept and "
                "trending_half_life_s must be positive"
            )
        self._counters_kept = counters_kept
        self._purchased_kept = purchased_kept
        self._trending_half_life_ms = trending_half_life_s * 1000
        self._client = client
        self._keys = keys
        self._history_len = history_len
        self._dedup_ttl_s = dedup_ttl_s
        self._user_ttl_s = user_ttl_s
        self._apply = client.register_script(_APPLY_EVENTS)
        self._mark_dead_lettered = client.register_script(_MARK_DEAD_LETTERED)

    def _event_args(
        self, effect: EventEffect, period: int, near_next: bool, keys: list[str], view: RedisKeys
    ) -> list[object]:
        """The event's keys (appended to `keys`; under `view`, its shard's) and its entry of
        the script's event array."""
        bucket, fingerprint = event_fingerprint(effect.event_id)
        now = view.seen_events(period, bucket)
        # the next period's records can exist only near its start (workers' clocks differ)
        later = view.seen_events(period + 1, bucket) if near_next else now
        keys += [view.seen_events(period - 1, bucket), now, later]
        keys += [view.history(effect.user_id), view.purchased(effect.user_id)]
        clicks: Counter[str] = Counter()
        units: Counter[str] = Counter()
        trending: dict[str, float] = defaultdict(float)
        lines: list[object] = []
        for line, it in enumerate(effect.interactions):
            trending[it.item_id] += self.trending_weight(it.ts_ms)
            lines += [it.ts_ms, history_member(effect.event_id, line, it)]
            if it.kind == "click":
                clicks[it.item_id] += 1
            else:
                units[it.item_id] += it.quantity
        bought_at = effect.interactions[0].ts_ms if effect.interactions else 0
        return [
            str(fingerprint),  # as text: Lua numbers are doubles
            str(content_fingerprint(effect)),
            lines,
            [x for pair in clicks.items() for x in pair],
            bought_at,
            [x for pair in units.items() for x in pair],
            [x for pair in trending.items() for x in pair],
        ]

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
        """Apply each effect once, atomically with its idempotency record: what became of each
        (`Applied.UNUSABLE_KEYS`: nothing written for it; the rest of the batch is applied).
        The batch goes in scripts of at most `MAX_WORK_PER_SCRIPT` work, the partition
        offsets with the last; raises `AppliedOffsetsMovedError` (that script wrote
        nothing) when an offset Redis holds is not the one expected. On a cluster each shard
        gets the scripts of its users' events and its advances (fields of `offset_fields`),
        the shards concurrently (one Redis: its only shard)."""
        members: dict[int, list[int]] = defaultdict(list)
        for n, effect in enumerate(effects):
            members[self._keys.shard_of(effect.user_id)].append(n)
        shard_advances: dict[int, list[PartitionAdvance]] = defaultdict(list)
        for advance in advances:
            shard, field = _shard_field(advance.partition)
            shard_advances[shard].append(replace(advance, partition=field))
        shards = sorted(set(members) | set(shard_advances))
        done = await asyncio.gather(
            *(
                self._apply_in(
                    self._keys.shard(g), [effects[n] for n in members[g]], shard_advances[g]
                )
                for g in shards
            ),
            return_exceptions=True,  # every shard's call ends before this one raises
        )
        outcomes: list[Applied | None] = [None] * len(effects)
        for shard, result in zip(shards, done, strict=True):
            if isinstance(result, BaseException):
                raise result
            for n, outcome in zip(members[shard], result, strict=True):
                outcomes[n] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    async def _apply_in(
        self,
        view: RedisKeys,
        effects: Sequence[EventEffect],
        advances: Sequence[PartitionAdvance],
    ) -> list[Applied]:
        """`apply_many` on the keys of `view` (one Redis, or one shard)."""
        parts: list[list[EventEffect]] = [[]]
        size = 0
        for effect in effects:
            work = 1 + len(effect.interactions)
            if parts[-1] and size + work > MAX_WORK_PER_SCRIPT:
                parts.append([])
                size = 0
            parts[-1].append(effect)
            size += work
        outcomes: list[Applied] = []
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            outcomes += await self._apply_part(view, part, advances if last else ())
        return outcomes

    async def _apply_part(
        self, k: RedisKeys, effects: Sequence[EventEffect], advances: Sequence[PartitionAdvance]
    ) -> list[Applied]:
        if not effects and not advances:
            return []
        keys = [k.item_clicks, k.item_orders, k.item_units, k.stats, k.item_trending]
        keys.append(k.applied_offsets)
        now_s = int(time.time())
        period = now_s // self._dedup_ttl_s
        near_next = (period + 1) * self._dedup_ttl_s - now_s < CLOCK_SKEW_ALLOWED_S
        args: list[str | int | bytes] = [
            (period + 2) * self._dedup_ttl_s + 60,
            self._history_len,
            self._user_ttl_s,
            self._counters_kept,
            len(advances),
            self._purchased_kept,
        ]
        for advance in advances:
            expected = "" if advance.expected is None else str(advance.expected)
            args += [advance.partition, expected, advance.applied]
        events = [self._event_args(e, period, near_next, keys, k) for e in effects]
        args.append(_MSGPACK.encode(events))
        results = await self._apply(keys=keys, args=args)
        if results and int(results[0]) == -2:
            raise AppliedOffsetsMovedError(
                "Redis holds other applied offsets than expected for "
                + ", ".join(a.partition for a in advances)
            )
        return [Applied(int(r)) for r in results]

    def offset_fields(self, partition: str) -> list[str]:
        """Where a partition's ("topic/partition") applied offset is kept: itself on one
        Redis, one field per shard on a cluster (each shard's effects come with its own)."""
        if not self._keys.shards:
            return [partition]
        return [f"{shard}{_SHARD_MARK}{partition}" for shard in range(self._keys.shards)]

    async def applied_offsets(self, fields: Sequence[str]) -> dict[str, int]:
        """The last applied offset Redis holds for each of `fields` (of `offset_fields`)
        that has one."""
        if not fields:
            return {}
        by_shard: dict[int, list[str]] = defaultdict(list)
        for field in fields:
            by_shard[_shard_field(field)[0]].append(field)
        shards = sorted(by_shard)
        replies = await asyncio.gather(
            *(
                self._client.hmget(
                    self._keys.shard(g).applied_offsets, [_shard_field(f)[1] for f in by_shard[g]]
                )
                for g in shards
            )
        )
        held: dict[str, int] = {}
        for shard, values in zip(shards, replies, strict=True):
            for field, value in zip(by_shard[shard], values, strict=True):
                if value is not None:
                    held[field] = int(value)
        return held

    async def was_dead_lettered(self, source: str) -> bool:
        """Whether the message at `source` (topic/partition/offset) already went to the DLQ."""
        return bool(await self._client.exists(self._keys.control.dead_lettered(source)))

    async def mark_dead_lettered(self, source: str) -> None:
        """Record that the message at `source` is in the DLQ, and count it."""
        control = self._keys.control
        keys = [control.dead_lettered(source), control.stats]
        await self._mark_dead_lettered(keys=keys, args=[self._dedup_ttl_s])

    async def history(self, user_id: str, limit: int | None = None) -> list[HistoryEntry]:
        """The user's recent interactions, newest first."""
        return (await self.histories([user_id], limit or self._history_len))[user_id]

    async def histories(self, user_ids: Sequence[str], limit: int) -> dict[str, list[HistoryEntry]]:
        """The newest `limit` interactions of each user (newest first), in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.zrevrange(self._keys.for_user(user_id).history(user_id), 0, limit - 1)
        raws = await pipe.execute(raise_on_error=False)
        return {
            u: await self._entries_of(u, raw, limit) for u, raw in zip(user_ids, raws, strict=True)
        }

    async def _entries_of(self, user_id: str, raw: object, limit: int) -> list[HistoryEntry]:
        """Entries from a ZREVRANGE reply; a history still kept as a list by an older version
        is read as one."""
        key = self._keys.for_user(user_id).history(user_id)
        legacy = partial(self._client.lrange, key, 0, limit - 1)
        raw = await _or_legacy(raw, legacy)
        if not isinstance(raw, list):
            raise TypeError(f"unexpected history reply {type(raw).__name__}")
        return history_entries(raw)

    async def purchased(self, user_id: str) -> set[str]:
        """Items the user has ordered (the newest `purchased_kept`)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.zrange(self._keys.for_user(user_id).purchased(user_id), 0, -1)
        (members,) = await pipe.execute(raise_on_error=False)
        return await self._purchased_of(user_id, members)

    async def _purchased_of(self, user_id: str, raw: object) -> set[str]:
        """Items from a ZRANGE reply; a set left by an older version is read as one."""
        key = self._keys.for_user(user_id).purchased(user_id)
        raw = await _or_legacy(raw, partial(self._client.smembers, key))
        if not isinstance(raw, list | set):
            raise TypeError(f"unexpected purchased reply {type(raw).__name__}")
        return {as_text(m) for m in raw}

    async def user_context(self, user_id: str, limit: int) -> tuple[list[HistoryEntry], set[str]]:
        """`history(user_id, limit)` and `purchased(user_id)` in one round trip."""
        keys = self._keys.for_user(user_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.zrevrange(keys.history(user_id), 0, limit - 1)
        pipe.zrange(keys.purchased(user_id), 0, -1)
        raw, members = await pipe.execute(raise_on_error=False)
        return await self._entries_of(user_id, raw, limit), await self._purchased_of(
            user_id, members
        )

    async def top_items(self, counter: str, n: int | None = 10) -> list[tuple[str, float]]:
        """Top `n` items (all when None) by `counter`: clicks, orders, units or trending. On a
        cluster the shards' counts are summed, from each shard's top `2 n` (an item outside
        every shard's top `2 n` is missed: shards hold similar mixes of users)."""
        end = -1 if n is None else (2 * n if self._keys.shards else n) - 1
        replies = await asyncio.gather(
            *(
                self._client.zrevrange(_counter(view, counter), 0, end, withscores=True)
                for view in self._keys.every_shard()
            )
        )
        if len(replies) == 1:
            return [(as_text(pair[0]), float(pair[1])) for pair in replies[0]]
        totals: dict[str, float] = defaultdict(float)
        for pairs in replies:
            for pair in pairs:
                totals[as_text(pair[0])] += float(pair[1])
        ranked = sorted(totals.items(), key=lambda pair: (-pair[1], pair[0]))
        return ranked if n is None else ranked[:n]

    async def stats(self) -> IngestStats:
        """What ingest has done so far (on a cluster, summed over the shards)."""
        keys = {view.stats for view in self._keys.every_shard()} | {self._keys.control.stats}
        replies = await asyncio.gather(*(self._client.hgetall(key) for key in sorted(keys)))
        values: Counter[str] = Counter()
        for raw in replies:
            values.update({as_text(k): int(v) for k, v in raw.items()})
        return IngestStats(
            applied=values.get("applied", 0),
            duplicates=values.get("duplicates", 0),
            dead_lettered=values.get("dead_lettered", 0),
        )


_SHARD_MARK = "|"  # between a shard and a partition in an offset field (never in a topic name)


def _shard_field(field: str) -> tuple[int, str]:
    """(shard, partition) of an offset field of `offset_fields` (shard 0 when it has none)."""
    shard, mark, partition = field.partition(_SHARD_MARK)
    return (int(shard), partition) if mark else (0, field)


def _counter(keys: RedisKeys, counter: str) -> str:
    """The sorted set of one item counter: clicks, orders, units or trending."""
    named = {"clicks": keys.item_clicks, "orders": keys.item_orders, "units": keys.item_units}
    named["trending"] = keys.item_trending
    return named[counter]
