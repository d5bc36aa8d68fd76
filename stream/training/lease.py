"""One trainer per model: a lease in Redis with a fencing token. Two trainers (a rolling
deploy, a second `compose up`) would otherwise write the same version numbers and flip the
served version back and forth; the second one waits, and says so, until the lease is free."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from functools import partial

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from store.redis_keys import RedisKeys, as_text
from store.vector_state import Fence
from stream.wiring import retrying

log = logging.getLogger(__name__)

# refresh the lease's expiry while it holds this trainer's value; take it again when nobody
# holds it (it expired during a pause, or Redis restarted empty) and no other trainer took it
_RENEW = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class TrainerLease:
    """`acquire` waits for the lease; `kept` renews it in the background (`held` turns False
    once lost); `fence` is what a publish checks in its own transaction, so a trainer that
    lost the lease (a long pause) cannot publish over the one that holds it now."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys, ttl_s: float) -> None:
        self._client, self._keys, self.ttl_ms = client, keys, int(ttl_s * 1000)
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._value = ""  # the last one taken ("": none yet); a lost lease still fences
        self.held = False

    async def acquire(self, stop: asyncio.Event, say_every_s: float = 10.0) -> bool:
        """Wait until this trainer holds the lease (True), or until `stop` (False)."""
        said = float("-inf")
        while not stop.is_set():
            token = await retrying(partial(self._client.incr, self._keys.trainer_fence))
            value = f"{token} {self.holder}"  # the token only grows: a fence
            taken = partial(
                self._client.set, self._keys.trainer_lease, value, nx=True, px=self.ttl_ms
            )
            if await retrying(taken):
                self._value, self.held = value, True
                log.info("trainer lease taken (token %d)", token)
                return True
            if time.monotonic() - said >= say_every_s:
                held = as_text(await retrying(self._lease) or b"?")
                log.warning("another trainer holds this model's lease (%s): waiting", held)
                said = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.ttl_ms / 3000)
        return False

    async def renew(self) -> bool:
        """Extend the lease (or take it again if nobody holds it); False when another trainer
        holds it now."""
        if not self.held:
            return False
        kept = await self._client.eval(
            _RENEW, 1, self._keys.trainer_lease, self._value, self.ttl_ms
        )
        if not kept:
            log.error("trainer lease lost (another trainer holds it now): stopping")
            self.held = False
        return bool(kept)

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Renew the lease every third of its time while the body runs, through a long step
        or publish too (a trainer dies with its process, and its lease with it)."""
        keeper = asyncio.create_task(self._keep())
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep(self) -> None:
        kept = True
        while kept:
            await asyncio.sleep(self.ttl_ms / 3000)
            kept = await retrying(self.renew)

    @property
    def fence(self) -> Fence | None:
        """The key and value a publish must still find (None: never taken). Once lost it
        stays the old value, which the key no longer holds: such a publish is fenced off."""
        return Fence(self._keys.trainer_lease, self._value) if self._value else None

    async def _lease(self) -> bytes | str | None:
        held: bytes | str | None = await self._client.get(self._keys.trainer_lease)
        return held

    async def release(self) -> None:
        """Give the lease up (best effort: with Redis away it simply expires)."""
        if self.held:
            self.held = False
            try:
                await self._client.eval(_RELEASE, 1, self._keys.trainer_lease, self._value)
            except (RedisError, OSError) as error:
                log.warning("trainer lease not released (%s): it expires by itself", error)
