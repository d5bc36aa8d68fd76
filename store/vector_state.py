"""Vectors and item metadata in Redis, and the change feed that keeps API replicas current."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from store.errors import StoreError
from store.redis_keys import RedisKeys, as_text
from store.vector_index import as_matrix

FeedOp = Literal["upsert", "delete", "meta"]
MODEL_INFO_KEPT = 1_000  # versions whose info is kept (one a second: about 17 minutes)


class FencedOffError(StoreError):
    """A fenced write found its fence moved: another writer holds the lease now."""


@dataclass(frozen=True, slots=True)
class Fence:
    """A write goes through only while `key` holds `value` (a lease's fencing token)."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class ItemMeta:
    """What filters look at (category, stock, free-form tags) and what the ranker's
    cold-start source and affinity features read (category, brand)."""

    category: str | None = None
    in_stock: bool = True
    tags: tuple[str, ...] = ()
    brand: str | None = None
    price: float | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "category": self.category,
                "in_stock": self.in_stock,
                "tags": list(self.tags),
                "brand": self.brand,
                "price": self.price,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> ItemMeta:
        doc = json.loads(raw)
        price = doc.get("price")
        return cls(
            doc.get("category"),
            bool(doc.get("in_stock", True)),
            tuple(doc.get("tags", ())),
            doc.get("brand"),
            None if price is None else float(price),
        )


@dataclass(frozen=True, slots=True)
class UserVector:
    """A user's vector, the model version that made it and the newest event it reflects."""

    vector: npt.NDArray[np.float32]
    model_version: int
    updated_ms: int
    as_of_event_id: str = ""


@dataclass(frozen=True, slots=True)
class UserVectorUpdate:
    """One user vector to write."""

    user_id: str
    vector: UserVector


@dataclass(frozen=True, slots=True)
class PublishedItems:
    """Item vectors as published, read in one transaction with the model version and the
    newest feed entry id: together they name one consistent published state."""

    ids: list[str]
    vectors: npt.NDArray[np.float32]
    missing: list[str]
    model_version: int | None
    feed_position: str


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One change: `op` on `item_ids`; followers read vectors/metadata from Redis."""

    entry_id: str
    op: FeedOp
    item_ids: list[str] = field(default_factory=list)


def _blob(value: object) -> bytes:
    """Vector bytes from redis-py (the client must not decode responses)."""
    if not isinstance(value, bytes):
        raise TypeError("RedisVectorState needs a client with decode_responses=False")
    return value


# Publishes a model version in one script (atomic, and within one slot on a cluster): its
# item vectors and their versions, leaving out items with a tombstone (deleted meanwhile),
# retired items' vectors removed, its info, a feed entry and the served version, only while
# the fence key holds the fence value (when one is given). KEYS: tombstones, fence key,
# vectors, versions, info, feed, model version. ARGV: fence value ('' for none), version,
# info JSON ('' for none), the info version to forget, the feed's oldest id kept, n, then n
# ids, their n vector blobs and the retired ids. Returns the items written, or -1: fenced off.
_PUBLISH = """
local fence = ARGV[1]
if fence ~= '' and redis.call('GET', KEYS[2]) ~= fence then return -1 end
local version, n = ARGV[2], tonumber(ARGV[6])
local announced = {}
for i = 1, n do
  local id = ARGV[6 + i]
  if redis.call('SISMEMBER', KEYS[1], id) == 0 then
    redis.call('HSET', KEYS[3], id, ARGV[6 + n + i])
    redis.call('HSET', KEYS[4], id, version)
    announced[#announced + 1] = id
  end
end
local written = #announced
for i = 7 + 2 * n, #ARGV do
  redis.call('HDEL', KEYS[3], ARGV[i])
  redis.call('HDEL', KEYS[4], ARGV[i])
  announced[#announced + 1] = ARGV[i]
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[5], version, ARGV[3])
  redis.call('HDEL', KEYS[5], ARGV[4])
end
local ids = #announced > 0 and cjson.encode(announced) or '[]'
redis.call('XADD', KEYS[6], 'MINID', '~', ARGV[5], '*', 'op', 'upsert', 'ids', ids,
  'version', version)
redis.call('SET', KEYS[7], version)
return written
"""
# Changes the catalogue and announces it in the feed, in one script. KEYS: vectors, meta,
# versions, tombstones, feed. ARGV: op (meta: set one item's metadata, lifting its tombstone;
# delete: forget the items' vectors and metadata and keep a tombstone of each), the feed's
# oldest id kept, the ids as JSON, the metadata JSON (meta), then the ids. Returns how many
# of the deleted items had a vector (0 for meta).
_CHANGE_ITEMS = """
local op, removed = ARGV[1], 0
for i = 5, #ARGV do
  local id = ARGV[i]
  if op == 'meta' then
    redis.call('HSET', KEYS[2], id, ARGV[4])
    redis.call('SREM', KEYS[4], id)
  else
    removed = removed + redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('SADD', KEYS[4], id)
  end
end
redis.call('XADD', KEYS[5], 'MINID', '~', ARGV[2], '*', 'op', op, 'ids', ARGV[3])
return removed
"""
# Reads what a publish wrote, as of one moment: KEYS: model version, feed, vectors; ARGV:
# item ids. Returns the version, the newest feed entry's id, then each item's vector (false
# where there is none: nil, or under RESP3 a boolean).
_READ_PUBLISHED = """
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
local out = {redis.call('GET', KEYS[1]), last and last[1] or false}
for i = 1, #ARGV do out[i + 2] = redis.call('HGET', KEYS[3], ARGV[i]) end
return out
"""
_FeedAnswer = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


class RedisVectorState:
    """User and item vectors (float32 bytes), item metadata, model version and the item feed."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: RedisKeys,
        dim: int,
        feed_retention_s: float = 600.0,
        user_ttl_s: int = 90 * 24 * 3600,
    ) -> None:
        self._client = client
        self._keys = keys.control  # the catalogue and the model: one slot on a cluster
        self._users = keys
        self.dim = dim
        self._feed_retention_ms = int(feed_retention_s * 1000)
        self._user_ttl_s = user_ttl_s
        self._publish = client.register_script(_PUBLISH)
        self._change = client.register_script(_CHANGE_ITEMS)
        self._read_published = client.register_script(_READ_PUBLISHED)

    async def put_user_vector(
        self,
        user_id: str,
        vector: npt.ArrayLike,
        model_version: int,
        updated_ms: int,
        as_of_event_id: str = "",
    ) -> None:
        row = as_matrix(vector, self.dim)[0]
        update = UserVector(row, model_version, updated_ms, as_of_event_id)
        await self.put_user_vectors([UserVectorUpdate(user_id, update)])

    async def put_user_vectors(self, updates: Sequence[UserVectorUpdate]) -> None:
        """Write many user vectors in one round trip; each lives `user_ttl_s` past its write."""
        pipe = self._client.pipeline(transaction=False)
        for update in updates:
            user = update.vector
            key = self._users.for_user(update.user_id).user_vector(update.user_id)
            pipe.hset(
                key,
                mapping={
                    "vector": as_matrix(user.vector, self.dim)[0].tobytes(),
                    "model_version": user.model_version,
                    "updated_ms": user.updated_ms,
                    "as_of_event_id": user.as_of_event_id,
                },
            )
            pipe.expire(key, self._user_ttl_s)
        await pipe.execute()

    async def user_vector(self, user_id: str) -> UserVector | None:
        raw = await self._client.hgetall(self._users.for_user(user_id).user_vector(user_id))
        if not raw:
            return None
        fields = {as_text(k): v for k, v in raw.items()}
        vector = np.frombuffer(_blob(fields["vector"]), dtype=np.float32)
        if vector.shape != (self.dim,):
            return None
        return UserVector(
            vector,
            int(fields["model_version"]),
            int(fields["updated_ms"]),
            as_text(fields.get("as_of_event_id", b"")),
        )

    async def put_item_vectors(
        self,
        item_ids: Sequence[str],
        vectors: npt.ArrayLike,
        model_version: int,
        info: Mapping[str, object] | None = None,
        fence: Fence | None = None,
        retired: Sequence[str] = (),
    ) -> None:
        """Publish `model_version`: its changed item vectors, their versions, a feed entry and
        the served version, in one script (followers see all of it or none; one slot on a
        cluster); `retired` items (gone from the model: expired) lose their vectors, keeping
        their metadata. Items with a tombstone are left out, checked in the same script, so an
        item deleted while the version was being prepared stays deleted. With `fence`, only
        while its key holds its value: else `FencedOffError` and nothing is written."""
        matrix = as_matrix(vectors, self.dim) if len(item_ids) else None
        if matrix is not None and len(item_ids) != len(matrix):
            raise ValueError(f"{len(item_ids)} ids for {len(matrix)} vectors")
        k = self._keys
        keys = [k.item_tombstones, fence.key if fence else k.item_tombstones, k.item_vectors]
        keys += [k.item_versions, k.model_info, k.item_feed, k.model_version]
        args: list[str | int | bytes] = [
            fence.value if fence else "",
            model_version,
            "" if info is None else json.dumps(dict(info)),
            model_version - MODEL_INFO_KEPT,
            self._feed_min_id(),
            len(item_ids),
            *item_ids,
            *([] if matrix is None else [row.tobytes() for row in matrix]),
            *retired,
        ]
        if int(await self._publish(keys=keys, args=args)) < 0:
            raise FencedOffError(f"{fence.key if fence else ''} no longer holds the fence")

    async def published(self, item_ids: Sequence[str]) -> PublishedItems:
        """The published vectors of `item_ids` with the model version and feed position, read
        in one script (the publisher writes all three in one)."""
        k = self._keys
        keys = [k.model_version, k.item_feed, k.item_vectors]
        reply = await self._read_published(keys=keys, args=list(item_ids))
        version, last, *values = [x if isinstance(x, bytes) else None for x in reply]
        found = [(i, v) for i, v in zip(item_ids, values, strict=True) if v is not None]
        ids, matrix = self._matrix(found)
        missing = [i for i, v in zip(item_ids, values, strict=True) if v is None]
        return PublishedItems(
            ids,
            matrix,
            missing,
            None if version is None else int(version),
            as_text(last) if last else "0-0",
        )

    async def model_info(self, version: int) -> dict[str, object]:
        """What the publisher recorded about `version` (empty when nothing was)."""
        raw = await self._client.hget(self._keys.model_info, str(version))
        info: dict[str, object] = json.loads(raw) if raw else {}
        return info

    async def put_item_meta(self, item_id: str, meta: ItemMeta) -> None:
        """Set an item's metadata (bringing back an item deleted before)."""
        await self._change_items("meta", [item_id], meta.to_json())

    async def delete_items(self, item_ids: Sequence[str]) -> int:
        """Forget vectors and metadata of `item_ids` and keep a tombstone of each, so that no
        later publish brings them back; returns how many had a vector."""
        return await self._change_items("delete", item_ids)

    async def _change_items(self, op: FeedOp, item_ids: Sequence[str], meta: str = "") -> int:
        """One `_CHANGE_ITEMS` call: the change and its feed entry in one script."""
        k = self._keys
        keys = [k.item_vectors, k.item_meta, k.item_versions, k.item_tombstones, k.item_feed]
        args = [op, self._feed_min_id(), json.dumps(list(item_ids)), meta, *item_ids]
        return int(await self._change(keys=keys, args=args))

    async def tombstones(self) -> set[str]:
        """Every deleted item id (see `delete_items`)."""
        return {as_text(i) for i in await self._client.smembers(self._keys.item_tombstones)}

    def _feed_min_id(self) -> str:
        """The oldest feed entry id kept: entries older than the retention are trimmed."""
        return f"{int(time.time() * 1000) - self._feed_retention_ms}-0"

    async def all_item_vectors(
        self, chunk: int = 10_000
    ) -> AsyncIterator[tuple[list[str], npt.NDArray[np.float32]]]:
        """Every stored item vector, in chunks (HSCAN: no single huge reply, Redis stays live)."""
        cursor = 0
        while True:
            cursor, raw = await self._client.hscan(self._keys.item_vectors, cursor, count=chunk)
            if raw:
                yield self._matrix(
                    [(as_text(k), v) for k, v in cast(dict[bytes, bytes], raw).items()]
                )
            if cursor == 0:
                return

    async def item_vectors(
        self, item_ids: Sequence[str]
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Vectors of those `item_ids` that exist, as ids and a matrix."""
        values = (
            await self._client.hmget(self._keys.item_vectors, list(item_ids)) if item_ids else []
        )
        return self._matrix(
            [(i, v) for i, v in zip(item_ids, values, strict=True) if v is not None]
        )

    def _matrix(
        self, pairs: Sequence[tuple[str, object]]
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        matrix = np.empty((len(pairs), self.dim), dtype=np.float32)
        for row, (_, blob) in enumerate(pairs):
            matrix[row] = np.frombuffer(_blob(blob), dtype=np.float32)
        return [p[0] for p in pairs], matrix

    async def item_meta(self, item_ids: Sequence[str] | None = None) -> dict[str, ItemMeta]:
        if item_ids is None:
            found: dict[str, ItemMeta] = {}
            async for key, value in self._client.hscan_iter(self._keys.item_meta, count=10_000):
                found[as_text(key)] = ItemMeta.from_json(_blob(value))
            return found
        if not item_ids:
            return {}
        values = await self._client.hmget(self._keys.item_meta, list(item_ids))
        return {
            i: ItemMeta.from_json(v) for i, v in zip(item_ids, values, strict=True) if v is not None
        }

    async def item_versions(self, item_ids: Sequence[str]) -> dict[str, int]:
        """Model version of each stored item vector (ids without a vector are left out)."""
        values = (
            await self._client.hmget(self._keys.item_versions, list(item_ids)) if item_ids else []
        )
        return {i: int(v) for i, v in zip(item_ids, values, strict=True) if v is not None}

    async def events_learned(self) -> int:
        """Events the served model version has learned (0 before the first version)."""
        version = await self.model_version()
        info = {} if version is None else await self.model_info(version)
        learned = info.get("events_learned", 0)
        return learned if isinstance(learned, int) else 0

    async def set_model_version(self, version: int) -> None:
        await self._client.set(self._keys.model_version, version)

    async def model_version(self) -> int | None:
        raw = await self._client.get(self._keys.model_version)
        return None if raw is None else int(raw)

    async def feed_position(self) -> str:
        """The id of the newest feed entry ('0-0' when empty): follow from here after a rebuild."""
        last = await self._client.xrevrange(self._keys.item_feed, count=1)
        return as_text(last[0][0]) if last else "0-0"

    async def feed_kept_since(self, position: str) -> bool:
        """Whether every feed entry after `position` is still there: the feed is trimmed from
        its oldest end, so that holds exactly while the entry at `position` is kept."""
        if position == "0-0":
            return True
        return bool(await self._client.xrange(self._keys.item_feed, position, position, count=1))

    async def read_feed(
        self, after: str, block_ms: int | None = None, count: int = 1_000
    ) -> list[FeedEntry]:
        """Feed entries after `after`, waiting up to `block_ms` for the first (None: no wait)."""
        raw = await self._client.xread({self._keys.item_feed: after}, count=count, block=block_ms)
        answer = cast(_FeedAnswer, raw or [])
        entries: list[FeedEntry] = []
        for _, messages in answer:
            for entry_id, fields in messages:
                doc = {as_text(k): as_text(v) for k, v in fields.items()}
                op = doc.get("op", "")
                if op in ("upsert", "delete", "meta"):
                    ids = json.loads(doc.get("ids", "[]"))
                    entries.append(
                        FeedEntry(as_text(entry_id), cast(FeedOp, op), [str(i) for i in ids])
                    )
        return entries
