"""Every Redis key recstream writes, under one configurable prefix, defined here only.

On one Redis every key is `<prefix><name>`. On a Redis Cluster (`shards` > 0) the keys carry
hash tags so that what one script or transaction touches shares a slot: a user's keys, the
idempotency records, item counters, ingest stats and applied offsets of the users that hash to
shard g live under `{<prefix>#g}` (one slot per shard, spread over the primaries), and so do
the vectors, versions, metadata and tombstones of the items that hash to shard g; the feed,
the model version, pending publishes, leases and dead-letter marks live under `{<prefix>}`
(the control slot). A view's keys are named as on one Redis under a tagged prefix, so the key
functions below are the only layout.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import redis


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Key layout; `prefix` isolates deployments, shadows and tests from each other; `shards`
    > 0 lays the keys out for a Redis Cluster (see the module's docstring)."""

    prefix: str = "recstream:"
    shards: int = 0

    def __post_init__(self) -> None:
        if self.shards < 0:
            raise ValueError(f"shards must be >= 0, not {self.shards}")

    @property
    def control(self) -> RedisKeys:
        """The view of the keys outside the shards (the item catalogue, the model, leases)."""
        return RedisKeys(f"{{{self.prefix}}}") if self.shards else self

    def shard_of(self, user_or_item_id: str) -> int:
        """The shard holding a user's keys, or an item's vector and metadata (0 on one Redis)."""
        return zlib.crc32(user_or_item_id.encode()) % self.shards if self.shards else 0

    def shard(self, number: int) -> RedisKeys:
        """The view of shard `number`'s keys (on one Redis, all keys)."""
        return RedisKeys(f"{{{self.prefix}#{number}}}") if self.shards else self

    def for_user(self, user_id: str) -> RedisKeys:
        """The view holding `user_id`'s keys."""
        return self.shard(self.shard_of(user_id))

    def for_item(self, item_id: str) -> RedisKeys:
        """The view holding `item_id`'s vector, version, metadata and tombstone."""
        return self.shard(self.shard_of(item_id))

    def every_shard(self) -> list[RedisKeys]:
        """Each shard's view, in shard order (one Redis: just this one)."""
        return [self.shard(n) for n in range(self.shards)] if self.shards else [self]

    def seen_events(self, period: int, bucket: int) -> str:
        """Set of the fingerprints of events applied in one period of processing time (one
        idempotency horizon long) whose id hashes to `bucket`: the idempotency records (see
        `event_fingerprint`)."""
        return f"{self.prefix}seen:{period}:{bucket}"

    def dead_lettered(self, source: str) -> str:
        """Marker that the message at `source` (topic/partition/offset) is in the DLQ."""
        return f"{self.prefix}dlq:{source}"

    def history(self, user_id: str) -> str:
        """Sorted set: the user's recent interactions (JSON entries) by event time."""
        return f"{self.prefix}user:{user_id}:history"

    def purchased(self, user_id: str) -> str:
        """Sorted set: item ids the user has ordered, by last order time (the newest kept)."""
        return f"{self.prefix}user:{user_id}:purchased"

    @property
    def item_clicks(self) -> str:
        """Sorted set: item id -> number of clicks."""
        return f"{self.prefix}items:clicks"

    @property
    def item_orders(self) -> str:
        """Sorted set: item id -> number of orders containing it."""
        return f"{self.prefix}items:orders"

    @property
    def item_units(self) -> str:
        """Sorted set: item id -> units ordered."""
        return f"{self.prefix}items:units"

    def user_vector(self, user_id: str) -> str:
        """Hash: the user's latest vector (float32 bytes), model_version, updated_ms and
        as_of_event_id (the newest event it reflects)."""
        return f"{self.prefix}user:{user_id}:vector"

    @property
    def item_vectors(self) -> str:
        """Hash: item id -> float32 vector bytes (what an index is rebuilt from)."""
        return f"{self.prefix}items:vectors"

    @property
    def item_versions(self) -> str:
        """Hash: item id -> model version of its stored vector."""
        return f"{self.prefix}items:versions"

    def staged_items(self, publish: str) -> str:
        """Hash: item id -> float32 vector bytes ('' for an item the version retires), the
        part of one publish (see `pending_publishes`) whose items are in this view's shard,
        written before the publish is announced and moved into `item_vectors` after."""
        return f"{self.prefix}items:staged:{publish}"

    @property
    def pending_publishes(self) -> str:
        """Set: publishes announced in the feed whose staged items are not yet all moved into
        `item_vectors` (each '<version>:<fence>'); readers finish them before reading."""
        return f"{self.prefix}model:pending"

    @property
    def item_meta(self) -> str:
        """Hash: item id -> JSON metadata used by filters (category, in_stock, tags)."""
        return f"{self.prefix}items:meta"

    @property
    def item_tombstones(self) -> str:
        """Set: ids deleted by `DELETE /v1/items` (never published nor served again, until a
        `PUT /v1/items` brings the item back)."""
        return f"{self.prefix}items:deleted"

    @property
    def item_feed(self) -> str:
        """Stream: the change feed of item vectors and metadata that API replicas follow."""
        return f"{self.prefix}items:feed"

    @property
    def model_version(self) -> str:
        """String: the model version whose vectors are being served."""
        return f"{self.prefix}model:version"

    @property
    def trainer_lease(self) -> str:
        """String '<token> <holder>' with a TTL: the trainer that may publish this model."""
        return f"{self.prefix}trainer:lease"

    @property
    def trainer_rollback(self) -> str:
        """String: a model version `recstream model rollback` asks the trainer to resume from."""
        return f"{self.prefix}trainer:rollback"

    @property
    def trainer_fence(self) -> str:
        """Counter: each lease taken gets the next token."""
        return f"{self.prefix}trainer:fence"

    @property
    def model_info(self) -> str:
        """Hash: model version -> JSON of what it holds (events learned, when learned/published)."""
        return f"{self.prefix}model:info"

    @property
    def item_trending(self) -> str:
        """Sorted set: item id -> exponentially decayed popularity (see trending_weight)."""
        return f"{self.prefix}items:trending"

    @property
    def applied_offsets(self) -> str:
        """Hash: "topic/partition" -> the last ingest offset whose effects are here, written in
        the same script as the effects (what a worker resumes from)."""
        return f"{self.prefix}ingest:offsets"

    @property
    def stats(self) -> str:
        """Hash of ingest counters: applied, duplicates, dead_lettered (conflicts among them); each
        message counts in exactly one."""
        return f"{self.prefix}stats"


def as_text(value: object) -> str:
    """A redis-py reply item as text (clients here do not decode responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def delete_prefixed(
    client: redis.Redis | redis.RedisCluster, prefix: str, chunk: int = 1000
) -> int:
    """Delete every key under `prefix` (a test's, a demo's or a shadow's); returns how many. A
    cluster client scans every primary for the tagged keys (see `RedisKeys`) and deletes
    them slot by slot."""
    cluster = isinstance(client, redis.RedisCluster)
    keys = list(client.scan_iter(match=f"{{{prefix}*" if cluster else f"{prefix}*", count=chunk))
    for start in range(0, len(keys), chunk):
        client.unlink(*keys[start : start + chunk])
    return len(keys)
