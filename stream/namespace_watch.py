"""How workers, the trainer and API replicas follow `recstream promote` / `rollback`."""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from store.namespaces import NamespaceRegistry
from stream.config import Settings

log = logging.getLogger(__name__)

FOLLOW_EVERY_S = 0.5  # how often a process looks at the serving pointer


class NamespaceWatch:
    """The namespace a process should read and write now: the one pinned in its settings, or
    else the serving one, looked up at most every `every_s` (one GET)."""

    def __init__(
        self, settings: Settings, client: aioredis.Redis, every_s: float = FOLLOW_EVERY_S
    ) -> None:
        self.settings = settings
        self.registry = NamespaceRegistry(client, settings.redis_prefix)
        self.every_s = every_s
        self._name = settings.namespace
        self._at = float("-inf")

    async def current(self) -> str:
        if self.settings.namespace:
            return self.settings.namespace
        if time.monotonic() - self._at >= self.every_s:
            try:
                self._name = await self.registry.serving()
                self._at = time.monotonic()
            except RedisError as error:
                log.warning(
                    "cannot read the serving namespace, staying on %r: %s", self._name, error
                )
        return self._name

    def settings_of(self, name: str) -> Settings:
        return self.settings.in_namespace(name)
