"""The Redis stores of the namespace `settings` point at, configured from them."""

from __future__ import annotations

import redis.asyncio as aioredis

from store.interaction_store import RedisInteractionStore
from store.redis_keys import RedisKeys
from store.vector_state import RedisVectorState
from stream.config import Settings


def interaction_store(settings: Settings, client: aioredis.Redis) -> RedisInteractionStore:
    """Where ingest effects go: histories, counters, idempotency records."""
    return RedisInteractionStore(
        client,
        RedisKeys(settings.keys_prefix),
        history_len=settings.history_len,
        dedup_ttl_s=settings.dedup_ttl_s,
        trending_half_life_s=settings.trending_half_life_s,
        user_ttl_s=settings.user_ttl_s,
    )


def vector_state(settings: Settings, client: aioredis.Redis) -> RedisVectorState:
    """Where vectors, item metadata, the model version and the item feed live."""
    return RedisVectorState(
        client,
        RedisKeys(settings.keys_prefix),
        settings.vector_dim,
        feed_retention_s=settings.feed_retention_s,
        user_ttl_s=settings.user_ttl_s,
    )
