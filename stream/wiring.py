"""A namespace's state opened from `Settings`, in one place: Redis clients (with their timeouts
and the retry policy of calls made while Redis is away), the interaction and vector stores,
the checkpoint store and served-model cache, and which namespace serves now."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis
import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from model.checkpoints import CheckpointStore
from model.serving_models import ServingModels
from store.cluster_client import BlockingClusterClient, ClusterClient, is_cluster_node
from store.interaction_store import RedisInteractionStore
from store.namespaces import NamespaceRegistry
from store.redis_keys import RedisKeys, delete_prefixed
from store.vector_state import RedisVectorState
from stream.config import Settings

log = logging.getLogger(__name__)

RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)
# replies of a Redis that is up but cannot take the call now (memory full under noeviction, a
# replica after failover, a failed snapshot, a long script, loading its data, a cluster
# resharding): an outage to wait out, never a fault of the data
REFUSALS = (
    "OOM",
    "READONLY",
    "MISCONF",
    "BUSY",
    "LOADING",
    "MASTERDOWN",
    "NOREPLICAS",
    "CLUSTERDOWN",
    "TRYAGAIN",
)
# the refusals redis-py raises as classes of their own (their message no longer starts with
# the code), by code
REFUSAL_ERRORS: dict[type[RedisError], str] = {
    OutOfMemoryError: "OOM",
    ReadOnlyError: "READONLY",
    BusyLoadingError: "LOADING",
    MasterDownError: "MASTERDOWN",
    ClusterDownError: "CLUSTERDOWN",
    TryAgainError: "TRYAGAIN",
}
HEALTH_CHECK_S = 15  # a connection idle this long is PINGed before its next use
FOLLOW_EVERY_S = 0.5  # how often a process looks at the serving pointer
T = TypeVar("T")


def redis_client(settings: Settings, timeout_s: float | None = None) -> aioredis.Redis:
    """An asyncio Redis client whose calls wait at most `timeout_s` (default
    `redis_socket_timeout_s`; the API passes its short fallback timeout), with TCP keepalive
    and a PING before reusing a connection idle for a while: a Redis that went silent is
    noticed and retried (`retrying`), never waited on for the kernel's TCP timeout. On a
    Redis Cluster, a cluster client (typed as a client of one Redis: the calls recstream
    makes are the same, each within one slot)."""
    timeout = settings.redis_socket_timeout_s if timeout_s is None else timeout_s
    options = _connection_options(timeout)
    if redis_is_cluster(settings):
        return cast(aioredis.Redis, ClusterClient.from_url(settings.redis_url, **options))
    return aioredis.from_url(settings.redis_url, **options)


def blocking_redis_client(settings: Settings) -> redis.Redis:
    """A blocking Redis client, for SCANs over many keys from synchronous code; its calls
    time out as `redis_client`'s do (on a Redis Cluster, a cluster client)."""
    options = _connection_options(settings.redis_socket_timeout_s)
    if redis_is_cluster(settings):
        return cast(redis.Redis, BlockingClusterClient.from_url(settings.redis_url, **options))
    return redis.Redis.from_url(settings.redis_url, **options)


def redis_is_cluster(settings: Settings, timeout_s: float = 2.0) -> bool:
    """Whether RECSTREAM_REDIS_URL is a Redis Cluster node: as RECSTREAM_REDIS_CLUSTER says,
    or (auto) as the node answers `INFO cluster`, asked once per process. A Redis that does
    not answer is taken for one Redis, with a warning, and asked again next time."""
    if settings.redis_cluster != "auto":
        return settings.redis_cluster == "yes"
    try:
        return is_cluster_node(settings.redis_url, timeout_s)
    except (redis.RedisError, OSError) as error:
        log.warning(
            "Redis at %s did not say whether it is a cluster node (%s): taking it for one "
            "Redis (RECSTREAM_REDIS_CLUSTER=yes says it is a cluster)",
            settings.redis_url,
            error,
        )
        return False


def redis_keys(settings: Settings) -> RedisKeys:
    """The key layout of the settings' namespace: sharded over `redis_shards` slots on a
    Redis Cluster."""
    shards = settings.redis_shards if redis_is_cluster(settings) else 0
    return RedisKeys(settings.keys_prefix, shards=shards)


def _connection_options(timeout_s: float) -> dict[str, Any]:
    """Timeouts, keepalive and idle-connection PINGs: the same for every Redis client."""
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_S,
    }


def unavailable(error: BaseException) -> str | None:
    """What kind of outage `error` is (`connection`, `timeout`, `OOM`, `READONLY`, ...), or
    None for an error that retrying cannot cure (a bad script, a wrong key type)."""
    if isinstance(error, RedisTimeoutError):
        return "timeout"
    for refusal, code in REFUSAL_ERRORS.items():
        if isinstance(error, refusal):
            return code
    if isinstance(error, RETRYABLE):
        return "connection"
    if isinstance(error, ResponseError):
        code = str(error).split(" ", 1)[0]
        return code if code in REFUSALS else None
    return None


async def retrying(
    call: Callable[[], Awaitable[T]],
    max_backoff_s: float = 5.0,
    retries: Counter | None = None,
) -> T:
    """Retry an infrastructure call until it succeeds: Redis down or timing out, and Redis up
    but refusing (`REFUSALS`); other errors raise. Workers and the trainer wait for Redis
    this way: they neither crash nor dead-letter good events. `retries` counts each retry,
    labelled by the outage's kind."""
    backoff = 0.05
    while True:
        try:
            return await call()
        except (RedisError, OSError) as error:
            kind = unavailable(error)
            if kind is None:
                raise
            log.warning("Redis unavailable (%s: %s); retrying in %.2fs", kind, error, backoff)
            if retries is not None:
                retries.labels(error=kind).inc()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)


def interaction_store(settings: Settings, client: aioredis.Redis) -> RedisInteractionStore:
    """Where ingest effects go: histories, counters, idempotency records."""
    return RedisInteractionStore(
        client,
        redis_keys(settings),
        history_len=settings.history_len,
        dedup_ttl_s=settings.dedup_ttl_s,
        trending_half_life_s=settings.trending_half_life_s,
        user_ttl_s=settings.user_ttl_s,
        counters_kept=settings.popular_items_kept,
        purchased_kept=settings.purchased_kept,
    )


def vector_state(settings: Settings, client: aioredis.Redis) -> RedisVectorState:
    """Where vectors, item metadata, the model version and the item feed live."""
    return RedisVectorState(
        client,
        redis_keys(settings),
        settings.vector_dim,
        feed_retention_s=settings.feed_retention_s,
        user_ttl_s=settings.user_ttl_s,
    )


def checkpoint_store(settings: Settings) -> CheckpointStore:
    """The namespace's model versions on disk (the newest `checkpoint_keep`, and one a minute
    over the last `checkpoint_history_s`)."""
    return CheckpointStore(
        settings.checkpoint_dir,
        keep=settings.checkpoint_keep,
        history_s=settings.checkpoint_history_s,
        state_every_s=settings.checkpoint_state_s,
    )


def serving_models(settings: Settings) -> ServingModels:
    """Loaded model versions of the namespace, to embed users with the version served."""
    return ServingModels(checkpoint_store(settings))


@dataclass(frozen=True, slots=True)
class NamespaceState:
    """What a worker or an API replica reads and writes in one namespace."""

    interactions: RedisInteractionStore
    vectors: RedisVectorState
    models: ServingModels


def namespace_state(settings: Settings, client: aioredis.Redis) -> NamespaceState:
    """The interaction store, vector state and served models of the namespace of `settings`."""
    return NamespaceState(
        interaction_store(settings, client),
        vector_state(settings, client),
        serving_models(settings),
    )


def namespace_registry(settings: Settings, client: aioredis.Redis) -> NamespaceRegistry:
    """The namespaces, their build records and the serving pointer."""
    return NamespaceRegistry(client, redis_keys(settings.in_namespace("")).control.prefix)


def delete_namespace_keys(settings: Settings) -> int:
    """Delete every Redis key of the namespace `settings` point at; returns how many."""
    client = blocking_redis_client(settings)
    try:
        return delete_prefixed(client, settings.keys_prefix)
    finally:
        client.close()


class NamespaceWatch:
    """How workers, the trainer and API replicas follow `recstream promote` / `rollback`: the
    namespace a process should read and write now is the one pinned in its settings, or else
    the serving one, looked up at most every `every_s` (one GET)."""

    def __init__(
        self, settings: Settings, client: aioredis.Redis, every_s: float = FOLLOW_EVERY_S
    ) -> None:
        self.settings = settings
        self.registry = namespace_registry(settings, client)
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
