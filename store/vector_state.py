"""Vectors and item metadata in Redis, and the change feed that keeps API replicas current."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
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
    """Item vectors as published, with the model version and the newest feed entry id they
    belong to: together they name one consistent published state."""

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


# A publish is staged, announced, then moved into place, so that each write stays within one
# slot on a Redis Cluster (item vectors are spread over the shards there) and a reader never
# sees part of a version: 1. each shard's part is staged under a key of its own, unseen;
# 2. `_ANNOUNCE`, in the control slot: only while the fence holds, the feed entry, the served
# version, its info, and the publish in the pending set; 3. `_MOVE_STAGED` in each shard, then
# the publish leaves the pending set. A reader finishes any pending publish before it reads
# (step 3 is idempotent), so a publisher that dies between 2 and 3 leaves nothing half done.
#
# _ANNOUNCE: KEYS: fence key, info, feed, model version, pending. ARGV: fence value ('' for
# none), version, info JSON ('' for none), the info version to forget, the feed's oldest id
# kept, the publish's name, the ids as JSON. Returns 0, or -1: fenced off (nothing written).
_ANNOUNCE = """
local fence = ARGV[1]
if fence ~= '' and redis.call('GET', KEYS[1]) ~= fence then return -1 end
local version = ARGV[2]
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], version, ARGV[3])
  redis.call('HDEL', KEYS[2], ARGV[4])
end
redis.call('XADD', KEYS[3], 'MINID', '~', ARGV[5], '*', 'op', 'upsert', 'ids', ARGV[7],
  'version', version)
redis.call('SET', KEYS[4], version)
redis.call('SADD', KEYS[5], ARGV[6])
return 0
"""
# _MOVE_STAGED: one shard's staged part of a publish into place, leaving out items with a
# tombstone (deleted while the version was prepared); retired items ('' staged) lose their
# vectors. KEYS: staged, tombstones, vectors, versions. ARGV: version. Returns items written.
_MOVE_STAGED = """
local staged, written = redis.call('HGETALL', KEYS[1]), 0
for i = 1, #staged, 2 do
  local id, blob = staged[i], staged[i + 1]
  if blob == '' then
    redis.call('HDEL', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
  elseif redis.call('SISMEMBER', KEYS[2], id) == 0 then
    redis.call('HSET', KEYS[3], id, blob)
    redis.call('HSET', KEYS[4], id, ARGV[1])
    written = written + 1
  end
end
redis.call('DEL', KEYS[1])
return written
"""
# Changes one shard's items (announced in the feed after): KEYS: vectors, meta, versions,
# tombstones. ARGV: op (meta: set the items' metadata, lifting their tombstones; delete:
# forget the items' vectors and metadata and keep a tombstone of each), the metadata JSON
# (meta), then the ids. Returns how many of the deleted items had a vector (0 for meta).
_CHANGE_ITEMS = """
local op, removed = ARGV[1], 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if op == 'meta' then
    redis.call('HSET', KEYS[2], id, ARGV[2])
    redis.call('SREM', KEYS[4], id)
  else
    removed = removed + redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('SADD', KEYS[4], id)
  end
end
return removed
"""
# The control slot as of one moment: KEYS: model version, feed, pending. Returns the version,
# the newest feed entry's id (false when none), then the pending publishes.
_READ_CONTROL = """
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
local out = {redis.call('GET', KEYS[1]), last and last[1] or false}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[3])) do out[#out + 1] = name end
return out
"""
STAGED_TTL_S = 24 * 3600  # a staged publish never announced (fenced off, crashed) expires
_STAGE_CHUNK = 2_000  # items per HSET while staging


@dataclass(frozen=True, slots=True)
class _Control:
    """The served version and the newest feed entry's id, with no publish pending."""

    version: int | None
    position: str


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
        self._keys = keys.control  # the feed and the model: one slot on a cluster
        self._shards = keys  # users and items, spread over the shards on a cluster
        self.dim = dim
        self._feed_retention_ms = int(feed_retention_s * 1000)
        self._user_ttl_s = user_ttl_s
        self._announce = client.register_script(_ANNOUNCE)
        self._move_staged = client.register_script(_MOVE_STAGED)
        self._change = client.register_script(_CHANGE_ITEMS)
        self._read_control = client.register_script(_READ_CONTROL)

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
            key = self._shards.for_user(update.user_id).user_vector(update.user_id)
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
        raw = await self._client.hgetall(self._shards.for_user(user_id).user_vector(user_id))
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
        """Publish `model_version`: its changed item vectors and their versions, a feed entry
        and the served version; followers see all of it or none (staged, announced, moved:
        see `_ANNOUNCE`). `retired` items (gone from the model: expired) lose their vectors,
        keeping their metadata. Items with a tombstone are left out, checked as they are moved
        into place, so an item deleted while the version was prepared stays deleted. With
        `fence`, only while its key holds its value: else `FencedOffError`, and nothing that
        anyone reads is written. Safe to retry."""
        matrix = as_matrix(vectors, self.dim) if len(item_ids) else None
        if matrix is not None and len(item_ids) != len(matrix):
            raise ValueError(f"{len(item_ids)} ids for {len(matrix)} vectors")
        publish = f"{model_version}:{fence.value if fence else ''}"
        blobs = [] if matrix is None else [row.tobytes() for row in matrix]
        await self._stage(publish, [*item_ids, *retired], [*blobs, *([b""] * len(retired))])
        k = self._keys
        keys = [fence.key if fence else k.model_version, k.model_info, k.item_feed]
        keys += [k.model_version, k.pending_publishes]
        args: list[str | int] = [
            fence.value if fence else "",
            model_version,
            "" if info is None else json.dumps(dict(info)),
            model_version - MODEL_INFO_KEPT,
            self._feed_min_id(),
            publish,
            json.dumps([*item_ids, *retired]),
        ]
        if int(await self._announce(keys=keys, args=args)) < 0:
            raise FencedOffError(f"{fence.key if fence else ''} no longer holds the fence")
        await self._finish(publish)

    async def _stage(self, publish: str, item_ids: Sequence[str], blobs: Sequence[bytes]) -> None:
        """Write each shard's part of `publish` where no reader looks (see `_ANNOUNCE`)."""
        pipe = self._client.pipeline(transaction=False)
        for shard, rows in self._by_shard(item_ids).items():
            staged = shard.staged_items(publish)
            pipe.delete(staged)  # a retried publish starts its part again
            for start in range(0, len(rows), _STAGE_CHUNK):
                part = rows[start : start + _STAGE_CHUNK]
                pipe.hset(staged, items=[x for n in part for x in (item_ids[n], blobs[n])])
            pipe.expire(staged, STAGED_TTL_S)
        await pipe.execute()

    async def _finish(self, publish: str) -> None:
        """Move every shard's staged part of an announced `publish` into place; idempotent, so
        a reader may finish a publish whose publisher died or is still at it."""
        await asyncio.gather(
            *(
                self._move_staged(
                    keys=[
                        shard.staged_items(publish),
                        shard.item_tombstones,
                        shard.item_vectors,
                        shard.item_versions,
                    ],
                    args=[publish.split(":", 1)[0]],
                )
                for shard in self._shards.every_shard()
            )
        )
        await self._client.srem(self._keys.pending_publishes, publish)

    async def _control(self) -> _Control:
        """The served version and the feed position, with no publish pending (finished here
        when one is)."""
        while True:
            k = self._keys
            keys = [k.model_version, k.item_feed, k.pending_publishes]
            reply = await self._read_control(keys=keys)
            version, last, *pending = [x if isinstance(x, bytes) else None for x in reply]
            if not pending:
                return _Control(
                    None if version is None else int(version), as_text(last) if last else "0-0"
                )
            for publish in pending:
                await self._finish(as_text(publish))

    async def published(self, item_ids: Sequence[str]) -> PublishedItems:
        """The published vectors of `item_ids` with the model version and feed position they
        belong to: read between two looks at the feed that find it unchanged (a publish or
        a change of items announces itself there)."""
        while True:
            control = await self._control()
            values = await self._values(lambda k: k.item_vectors, item_ids)
            if await self._feed_last() == control.position:
                break
        found = [(i, v) for i, v in zip(item_ids, values, strict=True) if v is not None]
        ids, matrix = self._matrix(found)
        missing = [i for i, v in zip(item_ids, values, strict=True) if v is None]
        return PublishedItems(ids, matrix, missing, control.version, control.position)

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
        """Change each shard's items (one `_CHANGE_ITEMS` each), then announce it in the feed.
        A failure between the two leaves Redis changed and the followers not told: the caller
        got an error and retries (both steps are idempotent)."""
        changed = await asyncio.gather(
            *(
                self._change(
                    keys=[s.item_vectors, s.item_meta, s.item_versions, s.item_tombstones],
                    args=[op, meta, *(item_ids[n] for n in rows)],
                )
                for s, rows in self._by_shard(item_ids).items()
            )
        )
        await self._client.xadd(
            self._keys.item_feed,
            {"op": op, "ids": json.dumps(list(item_ids))},
            minid=self._feed_min_id(),
            approximate=True,
        )
        return sum(int(n) for n in changed)

    async def tombstones(self) -> set[str]:
        """Every deleted item id (see `delete_items`)."""
        pipe = self._client.pipeline(transaction=False)
        for shard in self._shards.every_shard():
            pipe.smembers(shard.item_tombstones)
        return {as_text(i) for members in await pipe.execute() for i in members}

    def _feed_min_id(self) -> str:
        """The oldest feed entry id kept: entries older than the retention are trimmed."""
        return f"{int(time.time() * 1000) - self._feed_retention_ms}-0"

    def _by_shard(self, ids: Sequence[str]) -> dict[RedisKeys, list[int]]:
        """The positions in `ids` of each shard's items."""
        rows: dict[RedisKeys, list[int]] = {}
        for n, item_id in enumerate(ids):
            rows.setdefault(self._shards.for_item(item_id), []).append(n)
        return rows

    async def _values(
        self, name: Callable[[RedisKeys], str], item_ids: Sequence[str]
    ) -> list[bytes | None]:
        """Each item's field in the hash `name` of its shard (None where there is none)."""
        if not item_ids:
            return []
        groups = self._by_shard(item_ids)
        pipe = self._client.pipeline(transaction=False)
        for shard, rows in groups.items():
            pipe.hmget(name(shard), [item_ids[n] for n in rows])
        values: list[bytes | None] = [None] * len(item_ids)
        for rows, found in zip(groups.values(), await pipe.execute(), strict=True):
            for n, value in zip(rows, found, strict=True):
                values[n] = value
        return values

    async def all_item_vectors(
        self, chunk: int = 10_000
    ) -> AsyncIterator[tuple[list[str], npt.NDArray[np.float32]]]:
        """Every stored item vector, in chunks (HSCAN of each shard: no single huge reply,
        Redis stays live)."""
        for shard in self._shards.every_shard():
            cursor = 0
            while True:
                cursor, raw = await self._client.hscan(shard.item_vectors, cursor, count=chunk)
                if raw:
                    yield self._matrix(
                        [(as_text(k), v) for k, v in cast(dict[bytes, bytes], raw).items()]
                    )
                if cursor == 0:
                    break

    async def item_vectors(
        self, item_ids: Sequence[str]
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Vectors of those `item_ids` that exist, as ids and a matrix."""
        values = await self._values(lambda k: k.item_vectors, item_ids)
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
            for shard in self._shards.every_shard():
                async for key, value in self._client.hscan_iter(shard.item_meta, count=10_000):
                    found[as_text(key)] = ItemMeta.from_json(_blob(value))
            return found
        values = await self._values(lambda k: k.item_meta, item_ids)
        return {
            i: ItemMeta.from_json(v) for i, v in zip(item_ids, values, strict=True) if v is not None
        }

    async def item_versions(self, item_ids: Sequence[str]) -> dict[str, int]:
        """Model version of each stored item vector (ids without a vector are left out)."""
        values = await self._values(lambda k: k.item_versions, item_ids)
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
        """The served model version, every publish announced so far finished (so that one
        whose publisher died between its steps is completed, readers or none)."""
        return (await self._control()).version

    async def feed_position(self) -> str:
        """The id of the newest feed entry ('0-0' when empty), every publish it announces
        finished: follow from here after a rebuild."""
        return (await self._control()).position

    async def _feed_last(self) -> str:
        """The id of the newest feed entry ('0-0' when empty)."""
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
