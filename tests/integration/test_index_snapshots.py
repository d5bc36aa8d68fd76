"""A replica starts from its index snapshot and the feed since, not a build from Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import redis.asyncio as aioredis

from store import index_sync
from store.faiss_index import FaissVectorIndex
from store.index_snapshots import IndexSnapshots
from store.index_sync import IndexFollower
from store.item_catalog import ItemCatalog
from store.redis_keys import RedisKeys
from store.shared_index import SharedFlatIndex
from store.vector_index import VectorIndex
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
    state: RedisVectorState,
    snapshots: IndexSnapshots,
    linger_s: float = 0.5,
    index: VectorIndex | None = None,
) -> tuple[VectorIndex, IndexFollower]:
    """A replica's index started as `run` does, and left `linger_s` after it is ready (a
    snapshot after a build is written before following)."""
    index = index or FaissVectorIndex(DIM)
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


def _assert_holds(index: VectorIndex, published: dict[str, npt.NDArray[np.float32]]) -> None:
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


def test_processes_sharing_an_index_map_one_base_and_keep_only_the_changes_since(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second process maps the base the first one built (no build, no copy); as versions
    change items, each moves onto a newer base (its own or the other's) and holds exactly
    the published state, with a delta bounded by the changes since."""
    monkeypatch.setattr(index_sync, "REBASE_MIN", 20)
    monkeypatch.setattr(index_sync, "REBASE_EVERY_S", 0.0)

    async def main() -> None:
        client = aioredis.from_url(settings.redis_url)
        keys = RedisKeys(settings.redis_prefix)
        state = _CountingState(client, keys, DIM)
        snapshots = IndexSnapshots(tmp_path / "snapshots")
        rng = np.random.default_rng(3)
        ids = [f"i{n}" for n in range(200)]
        try:
            await state.put_item_vectors(ids, _unit(rng, 200), 1)
            first, _ = await _start(state, snapshots, index=SharedFlatIndex(DIM))
            second, _ = await _start(state, snapshots, index=SharedFlatIndex(DIM))
            assert state.full_reads == 1  # the second mapped what the first built
            for index in (first, second):
                assert isinstance(index, SharedFlatIndex)
                assert (index.base_size, index.delta_size) == (200, 0)
            assert isinstance(first, SharedFlatIndex)
            assert isinstance(second, SharedFlatIndex)
            assert first.base_directory == second.base_directory

            followers = [
                IndexFollower(state, SharedFlatIndex(DIM), ItemCatalog(), snapshots=snapshots)
                for _ in range(2)
            ]
            newest = [asyncio.Event() for _ in followers]
            for follower, served in zip(followers, newest, strict=True):
                follower.on_served = lambda v, e=served: e.set() if v.version == 11 else None
            tasks = [asyncio.create_task(f.run(block_ms=50)) for f in followers]
            for version in range(2, 12):
                changed = [ids[n] for n in rng.choice(200, 15, replace=False)]
                await state.put_item_vectors([*changed, f"new{version}"], _unit(rng, 16), version)
                if version == 6:
                    await state.delete_items(["i0", "new2"])
                await asyncio.sleep(0.2)
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in newest)), 30)
            for follower in followers:
                follower.stop()
            await asyncio.wait(tasks, timeout=5)
            published = await _published(RedisVectorState(client, keys, DIM))
            for follower in followers:
                index = follower.index
                assert isinstance(index, SharedFlatIndex)
                _assert_holds(index, published)
                assert index.base_size > 200  # moved onto a newer base at least once
                assert index.delta_size <= 3 * 16
                assert index.base_directory is not None
                assert index.base_directory.parent == tmp_path / "snapshots"
            assert state.full_reads == 1
        finally:
            await client.aclose()

    asyncio.run(main())


def test_processes_started_together_build_the_index_once(
    settings: Settings, tmp_path: Path
) -> None:
    async def main() -> None:
        client = aioredis.from_url(settings.redis_url)
        state = _CountingState(client, RedisKeys(settings.redis_prefix), DIM)
        snapshots = IndexSnapshots(tmp_path / "snapshots")
        try:
            await state.put_item_vectors(
                [f"i{n}" for n in range(50)], _unit(np.random.default_rng(4), 50), 1
            )
            started = await asyncio.gather(*(_start(state, snapshots) for _ in range(3)))
            assert state.full_reads == 1  # one built; the others waited, then restored
            published = await _published(state)
            for index, _ in started:
                _assert_holds(index, published)
        finally:
            await client.aclose()

    asyncio.run(main())
