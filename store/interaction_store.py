"""Redis state fed by ingest: user histories, purchased sets, item counters; idempotent per event.

Each event's effects and its idempotency marker are written by one Lua script, so they land
together or not at all: replaying or redelivering an event changes nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from model.interaction import Interaction
from store.redis_keys import RedisKeys

# KEYS: seen, history, purchased, item_clicks, item_orders, item_units, stats
# ARGV: ttl, history_len, n_history, history entries..., n_clicks, (item, count)...,
#       n_orders, (item, units)..., purchased items...
_APPLY_EVENT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('HINCRBY', KEYS[7], 'duplicates', 1)
  return 0
end
local i = 3
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('LPUSH', KEYS[2], ARGV[i]); i = i + 1 end
if n > 0 then redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1) end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('ZINCRBY', KEYS[4], ARGV[i + 1], ARGV[i]); i = i + 2 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('ZINCRBY', KEYS[5], 1, ARGV[i])
  redis.call('ZINCRBY', KEYS[6], ARGV[i + 1], ARGV[i])
  redis.call('SADD', KEYS[3], ARGV[i])
  i = i + 2
end
redis.call('HINCRBY', KEYS[7], 'applied', 1)
return 1
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class EventEffect:
    """The interactions one event contributes, keyed by its idempotency id."""

    event_id: str
    user_id: str
    interactions: tuple[Interaction, ...]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One remembered interaction of a user."""

    item_id: str
    kind: str
    ts_ms: int


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
    ) -> None:
        if history_len < 1 or dedup_ttl_s < 1:
            raise ValueError("history_len and dedup_ttl_s must be positive")
        self._client = client
        self._keys = keys
        self._history_len = history_len
        self._dedup_ttl_s = dedup_ttl_s
        self._apply = client.register_script(_APPLY_EVENT)

    def _args(self, effect: EventEffect) -> tuple[list[str], list[str | int]]:
        k = self._keys
        keys = [
            k.seen_event(effect.event_id),
            k.history(effect.user_id),
            k.purchased(effect.user_id),
            k.item_clicks,
            k.item_orders,
            k.item_units,
            k.stats,
        ]
        clicks: Counter[str] = Counter()
        units: Counter[str] = Counter()
        history: list[str] = []
        for it in effect.interactions:
            history.append(
                json.dumps(
                    {"item_id": it.item_id, "kind": it.kind, "ts_ms": it.ts_ms},
                    separators=(",", ":"),
                )
            )
            if it.kind == "click":
                clicks[it.item_id] += 1
            else:
                units[it.item_id] += it.quantity
        args: list[str | int] = [self._dedup_ttl_s, self._history_len, len(history), *history]
        args.append(len(clicks))
        for item_id, count in clicks.items():
            args += [item_id, count]
        args.append(len(units))
        for item_id, count in units.items():
            args += [item_id, count]
        return keys, args

    async def apply_many(self, effects: Sequence[EventEffect]) -> list[bool]:
        """Apply each effect once; True where applied now, False where already applied before."""
        if not effects:
            return []
        pipe = self._client.pipeline(transaction=False)
        for effect in effects:
            keys, args = self._args(effect)
            await self._apply(keys=keys, args=args, client=pipe)
        results = await pipe.execute()
        return [bool(r) for r in results]

    async def was_dead_lettered(self, source: str) -> bool:
        """Whether the message at `source` (topic/partition/offset) already went to the DLQ."""
        return bool(await self._client.exists(self._keys.seen_event(f"dlq:{source}")))

    async def mark_dead_lettered(self, source: str) -> None:
        """Record that the message at `source` is in the DLQ, and count it."""
        pipe = self._client.pipeline(transaction=True)
        pipe.set(self._keys.seen_event(f"dlq:{source}"), "1", ex=self._dedup_ttl_s)
        pipe.hincrby(self._keys.stats, "dead_lettered", 1)
        await pipe.execute()

    async def history(self, user_id: str, limit: int | None = None) -> list[HistoryEntry]:
        """The user's recent interactions, newest first."""
        end = -1 if limit is None else limit - 1
        raw = await self._client.lrange(self._keys.history(user_id), 0, end)
        entries = [json.loads(r) for r in raw]
        return [HistoryEntry(e["item_id"], e["kind"], int(e["ts_ms"])) for e in entries]

    async def purchased(self, user_id: str) -> set[str]:
        """Items the user has ordered."""
        members = await self._client.smembers(self._keys.purchased(user_id))
        return {_text(m) for m in members}

    async def top_items(self, counter: str, n: int | None = 10) -> list[tuple[str, float]]:
        """Top `n` items (all when None) by `counter`: 'clicks', 'orders' or 'units'."""
        keys = {"clicks": self._keys.item_clicks, "orders": self._keys.item_orders}
        keys["units"] = self._keys.item_units
        end = -1 if n is None else n - 1
        pairs = await self._client.zrevrange(keys[counter], 0, end, withscores=True)
        return [(_text(pair[0]), float(pair[1])) for pair in pairs]

    async def counter_total(self, counter: str) -> float:
        """Sum of a counter over all items."""
        return sum(score for _, score in await self.top_items(counter, n=None))

    async def stats(self) -> IngestStats:
        """What ingest has done so far."""
        raw = await self._client.hgetall(self._keys.stats)
        values = {_text(k): int(v) for k, v in raw.items()}
        return IngestStats(
            applied=values.get("applied", 0),
            duplicates=values.get("duplicates", 0),
            dead_lettered=values.get("dead_lettered", 0),
        )
