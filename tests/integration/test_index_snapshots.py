"""A replica starts from its index snapshot and the feed since, not a build from Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import redis.asyncio as aioredis

from store.faiss_index import FaissVectorIndex
from store.index_snapshots import IndexSnapshots
from store.index_sync import IndexFollower
from store.item_catalog import ItemCatalog
from store.redis_keys import RedisKeys
from store.vector_state import RedisVectorState
from stream.config import Settings

pytestmark = pytest.mark.integration
DIM = 8


def _unit(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    unit: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


class _CountingState(RedisVectorState):
    """The vector state, counting full reads of the item vectors (what a build does)."""

    full_reads = 0

    def all_item_vectors(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        self.full_reads += 1
        return super().all_item_vectors(*args, **kwargs)  # type: ignore[arg-type]


async def _start(
    state: RedisVectorState, snapshots: IndexSnapshots, linger_s: float = 0.5
) -> tuple[FaissVectorIndex, IndexFollower]:
    """A replica's index started as `run` does, and left `linger_s` after it is ready (a
    snapshot after a build is written before following)."""
    index = FaissVectorIndex(DIM)
    follower = IndexFollower(state, index, ItemCatalog(), snapshots=snapshots)
    task = asyncio.create_task(follower.run(block_ms=50))
    await asyncio.wait_for(follower.ready.wait(), 30)
    await asyncio.sleep(linger_s)
    follower.stop()
    await asyncio.wait([task], timeout=5)
    return index, follower


async def _published(state: RedisVectorState) -> dict[str, npt.NDArray[np.float32]]:
    found: dict[str, npt.NDArray[np.float32]] = {}
    async for ids, vectors in state.all_item_vectors():
        found.update(zip(ids, vectors, strict=True))
    return found


def _assert_holds(index: FaissVectorIndex, published: dict[str, npt.NDArray[np.float32]]) -> None:
    assert sorted(index.ids()) == sorted(published)
    ids = sorted(published)
    np.testing.assert_array_equal(index.vectors(ids), np.stack([published[i] for i in ids]))


def test_a_restart_loads_the_snapshot_and_reads_the_feed_since(
    settings: Settings, tmp_path: Path
) -> None:
    async def main() -> None:
        client = aioredis.from_url(settings.redis_url)
        keys = RedisKeys(settings.redis_prefix)
        state = _CountingState(client, keys, DIM)
        plain = RedisVectorState(client, keys, DIM)
        snapshots = IndexSnapshots(tmp_path / "snapshots")
        rng = np.random.default_rng(0)
        try:
            await state.put_item_vectors([f"i{n}" for n in range(40)], _unit(rng, 40), 1)
            await _start(state, snapshots)  # builds from Redis, then snapshots
            assert state.full_reads == 1

            # published while the replica was down: new, changed and deleted items
            await state.put_item_vectors(["new-1", "new-2", "i3"], _unit(rng, 3), 2)
            await state.delete_items(["i7"])
            index, follower = await _start(state, snapshots)
            assert state.full_reads == 1  # no build: the snapshot and the feed since
            _assert_holds(index, await _published(plain))
            assert follower.served is not None
            assert follower.served.version == 2

            # the feed trimmed past the snapshot's position: built from Redis again
            await client.xtrim(keys.item_feed, maxlen=0)
            await state.put_item_vectors(["new-3"], _unit(rng, 1), 3)
            index, _ = await _start(state, snapshots)
            assert state.full_reads == 2
            _assert_holds(index, await _published(plain))
        finally:
            await client.aclose()

    asyncio.run(main())


def test_an_unreadable_or_foreign_snapshot_means_a_build(tmp_path: Path) -> None:
    index = FaissVectorIndex(DIM)
    index.upsert(["a"], _unit(np.random.default_rng(1), 1))
    snapshots = IndexSnapshots(tmp_path)
    assert snapshots.load(FaissVectorIndex(DIM)) is None  # none yet
    snapshots.save(index, "1-0")
    snapshots.save(index, "2-0")
    snapshots.save(index, "3-0")
    assert len(list(tmp_path.glob("snap-*"))) == 2  # the older ones pruned
    restored = FaissVectorIndex(DIM)
    assert snapshots.load(restored) == "3-0"
    assert restored.ids() == ["a"]
    assert snapshots.load(FaissVectorIndex(DIM + 1)) is None  # another index type
    (tmp_path / "current").resolve().joinpath("feed.json").write_text("{")
    assert snapshots.load(FaissVectorIndex(DIM)) is None


def test_a_snapshot_that_cannot_be_written_leaves_the_replica_serving(
    settings: Settings, tmp_path: Path
) -> None:
    async def main() -> None:
        client = aioredis.from_url(settings.redis_url)
        state = _CountingState(client, RedisKeys(settings.redis_prefix), DIM)
        blocked = tmp_path / "not-a-directory"
        blocked.write_text("a full or read-only disk")
        try:
            await state.put_item_vectors(["a", "b"], _unit(np.random.default_rng(2), 2), 1)
            index, _ = await _start(state, IndexSnapshots(blocked / "snapshots"), linger_s=3.0)
            assert sorted(index.ids()) == ["a", "b"]
            assert state.full_reads == 1  # built once, not again and again
        finally:
            await client.aclose()

    asyncio.run(main())
