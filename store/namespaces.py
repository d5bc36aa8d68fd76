"""Namespaces: whole copies of the serving state under their own key prefix (a rebuilt shadow,
the base deployment), and the pointer that says which one serves, switched atomically."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from store.redis_keys import as_text

BASE = ""  # the namespace of a deployment that never promoted anything

# KEYS: serving, previous, info. ARGV: mode ('promote' | 'rollback'), name, now_ms.
# Both modes record when the namespace that stops serving was last complete.
_SWITCH = """
local current = redis.call('GET', KEYS[1]) or ''
local target = ARGV[2]
if ARGV[1] == 'rollback' then
  target = redis.call('GET', KEYS[2])
  if not target then return {err = 'nothing to roll back to: no namespace served before'} end
elseif redis.call('HEXISTS', KEYS[3], target) == 0 and target ~= '' then
  return {err = 'no namespace ' .. target .. ': build it first with recstream rebuild'}
end
if target == current then return {current, current} end
local old = redis.call('HGET', KEYS[3], current)
local record = old and cjson.decode(old) or {}
record['complete_ms'] = tonumber(ARGV[3])
redis.call('HSET', KEYS[3], current, cjson.encode(record))
redis.call('SET', KEYS[2], current)
redis.call('SET', KEYS[1], target)
return {current, target}
"""


@dataclass(frozen=True, slots=True)
class Switch:
    """A change of the serving namespace."""

    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


class NamespaceRegistry:
    """`<prefix>serving` (the serving namespace's name; absent: the base), `<prefix>serving:
    previous` (what rollback returns to) and `<prefix>namespaces` (name -> JSON record: when
    it was built and up to when it holds every event, `complete_ms`)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.serving_key = f"{prefix}serving"
        self.previous_key = f"{prefix}serving:previous"
        self.info_key = f"{prefix}namespaces"

    async def serving(self) -> str:
        value = await self.client.get(self.serving_key)
        return BASE if value is None else as_text(value)

    async def previous(self) -> str | None:
        """What `rollback` would serve again (None: nothing served before a switch)."""
        value = await self.client.get(self.previous_key)
        return None if value is None else as_text(value)

    async def record(self, name: str) -> dict[str, Any] | None:
        value = await self.client.hget(self.info_key, name)
        if value is None:
            return None
        record: dict[str, Any] = json.loads(value)
        return record

    async def names(self) -> dict[str, dict[str, Any]]:
        raw = await self.client.hgetall(self.info_key)
        return {as_text(k): json.loads(v) for k, v in raw.items()}

    async def register(self, name: str, record: dict[str, Any]) -> None:
        await self.client.hset(self.info_key, name, json.dumps(record))

    async def forget(self, name: str) -> None:
        await self.client.hdel(self.info_key, name)

    async def promote(self, name: str) -> Switch:
        """Serve `name` from now on; the one serving until now becomes the rollback target."""
        return await self._switch("promote", name)

    async def rollback(self) -> Switch:
        """Serve the namespace that served before the last switch again."""
        return await self._switch("rollback", "")

    async def _switch(self, mode: str, name: str) -> Switch:
        keys = (self.serving_key, self.previous_key, self.info_key)
        try:
            before, after = await self.client.eval(
                _SWITCH, len(keys), *keys, mode, name, int(time.time() * 1000)
            )
        except ResponseError as error:
            raise ValueError(str(error)) from None
        return Switch(as_text(before), as_text(after))
