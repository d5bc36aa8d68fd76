"""Vector state, the index follower and the retriever against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import hypothesis
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.interaction import EventEffect, Interaction, InteractionKind
from model.serving_models import ServingModels
from model.two_tower import TwoTowerConfig
from store.faiss_index import FaissVectorIndex
from store.index_sync import IndexFollower
from store.interaction_store import HistoryEntry, RedisInteractionStore
from store.item_catalog import ItemCatalog
from store.retrieval import Filters, Retriever, UnknownItemError
from store.vector_state import Fence, FencedOffError, ItemMeta, RedisVectorState
from stream.config import Settings
from stream.user_vectors import INLINE_USERS, UserVectorWriter
from stream.wiring import redis_client, redis_keys


@pytest.fixture(scope="module")
def redis_url(each_redis: str) -> str:
    """Every test here runs against one Redis and against a Redis Cluster."""
    return each_redis


DIM = 8


@dataclass
class World:
    state: RedisVectorState
    interactions: RedisInteractionStore
    follower: IndexFollower
    retriever: Retriever


def _unit(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    unit: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


async def _open(settings: Settings) -> tuple[World, Callable[[], Awaitable[None]]]:
    client = redis_client(settings)
    keys = redis_keys(settings)
    state = RedisVectorState(client, keys, DIM)
    interactions = RedisInteractionStore(client, keys)
    index = FaissVectorIndex(DIM)
    catalog = ItemCatalog()
    follower = IndexFollower(state, index, catalog)
    retriever = Retriever(index, catalog, state, interactions)
    return World(state, interactions, follower, retriever), client.aclose


def run(settings: Settings, scenario: Callable[[World], Awaitable[None]]) -> None:
    async def main() -> None:
        world, close = await _open(settings)
        try:
            await scenario(world)
        finally:
            await close()

    asyncio.run(main())


async def _clicks(
    world: World,
    user_id: str,
    items: list[str],
    kind: InteractionKind = "click",
    start_ms: int = 0,
) -> None:
    """One event per item, a millisecond apart from `start_ms`."""
    effects = [
        EventEffect(
            f"{user_id}-{kind}-{n}", user_id, (Interaction(user_id, i, kind, start_ms + n),)
        )
        for n, i in enumerate(items)
    ]
    await world.interactions.apply_many(effects)


def test_vectors_metadata_and_versions_round_trip(settings: Settings) -> None:
    async def scenario(world: World) -> None:
        rng = np.random.default_rng(0)
        vectors = _unit(rng, 3)
        await world.state.put_item_vectors(["a", "b", "c"], vectors, model_version=1)
        await world.state.put_item_vectors(["c"], vectors[2:], model_version=2)
        await world.state.put_item_meta("a", ItemMeta("shoes", False, ("sale",)))
        await world.state.put_user_vector("u1", vectors[0], model_version=7, updated_ms=123)
        await world.state.set_model_version(7)
        ids, loaded = await world.state.item_vectors(["c", "zz", "a"])
        assert ids == ["c", "a"]
        np.testing.assert_array_equal(loaded, vectors[[2, 0]])
        assert (await world.state.item_meta())["a"] == ItemMeta("shoes", False, ("sale",))
        user = await world.state.user_vector("u1")
        assert user is not None
        np.testing.assert_array_equal(user.vector, vectors[0])
        assert (user.model_version, user.updated_ms) == (7, 123)
        assert await world.state.user_vector("nobody") is None
        assert await world.state.model_version() == 7
        assert await world.state.item_versions(["a", "c", "zz"]) == {"a": 1, "c": 2}
        assert await world.state.delete_items(["b", "zz"]) == 1
        assert await world.state.item_versions(["b"]) == {}

    run(settings, scenario)


def test_item_vectors_and_metadata_live_with_their_shard_not_in_one_key(
    settings: Settings,
) -> None:
    async def scenario(world: World) -> None:
        ids = [f"item-{n}" for n in range(64)]
        await world.state.put_item_vectors(ids, _unit(np.random.default_rng(9), 64), 1)
        for item_id in ids:
            await world.state.put_item_meta(item_id, ItemMeta(category="c"))
        client, keys = world.state._client, redis_keys(settings)
        counts = [await client.hlen(s.item_vectors) for s in keys.every_shard()]
        metas = [await client.hlen(s.item_meta) for s in keys.every_shard()]
        assert sum(counts) == sum(metas) == 64
        if keys.shards:  # a cluster: spread over the shards, none in the control slot
            assert sum(1 for n in counts if n) >= keys.shards // 2
            assert await client.exists(keys.control.item_vectors, keys.control.item_meta) == 0
        else:  # one Redis: the key names of before
            assert await client.hlen(f"{settings.redis_prefix}items:vectors") == 64
        assert await client.scard(keys.control.pending_publishes) == 0

    run(settings, scenario)


def test_a_publish_whose_publisher_died_after_announcing_it_is_finished_by_the_next_reader(
    settings: Settings,
) -> None:
    async def scenario(world: World) -> None:
        rng = np.random.default_rng(10)
        ids = [f"i{n}" for n in range(20)]
        await world.state.put_item_vectors(ids, _unit(rng, 20), model_version=1)
        finish = world.state._finish

        async def die(publish: str) -> None:
            raise RuntimeError("the publisher died after announcing " + publish)

        world.state._finish = die  # type: ignore[method-assign]
        fresh = _unit(rng, 10)
        with pytest.raises(RuntimeError):
            await world.state.put_item_vectors(ids[:10], fresh, 2, retired=ids[-2:])
        world.state._finish = finish  # type: ignore[method-assign]
        pending = redis_keys(settings).control.pending_publishes
        assert await world.state._client.scard(pending) == 1
        assert await world.state.model_version() == 2  # the trainer at its restart, say
        assert await world.state._client.scard(pending) == 0
        published = await world.state.published(ids)
        assert published.model_version == 2
        assert published.missing == ids[-2:]
        np.testing.assert_array_equal(published.vectors[:10], fresh)
        assert await world.state.item_versions(ids[:11]) == {
            **{i: 2 for i in ids[:10]},
            ids[10]: 1,
        }

    run(settings, scenario)


def test_a_fenced_off_publish_leaves_what_readers_see_unchanged(settings: Settings) -> None:
    async def scenario(world: World) -> None:
        rng = np.random.default_rng(11)
        ids = ["a", "b", "c"]
        before = _unit(rng, 3)
        lease = redis_keys(settings).control.trainer_lease
        await world.state._client.set(lease, "2 new-holder")
        await world.state.put_item_vectors(ids, before, 1, fence=Fence(lease, "2 new-holder"))
        position = await world.state.feed_position()
        with pytest.raises(FencedOffError):
            await world.state.put_item_vectors(ids, _unit(rng, 3), 2, fence=Fence(lease, "1 old"))
        published = await world.state.published(ids)
        assert (published.model_version, published.feed_position) == (1, position)
        np.testing.assert_array_equal(published.vectors, before)
        assert await world.state.item_versions(ids) == {"a": 1, "b": 1, "c": 1}

    run(settings, scenario)


def test_an_item_deleted_while_a_version_is_staged_is_not_brought_back(
    settings: Settings,
) -> None:
    async def scenario(world: World) -> None:
        rng = np.random.default_rng(12)
        state = world.state
        await state.put_item_vectors(["a", "b"], _unit(rng, 2), model_version=1)
        stage = state._stage

        async def deleted_meanwhile(publish: str, *args: Any) -> None:
            await stage(publish, *args)
            await state.delete_items(["b"])

        state._stage = deleted_meanwhile  # type: ignore[method-assign,assignment]
        await state.put_item_vectors(["a", "b"], _unit(rng, 2), model_version=2)
        published = await state.published(["a", "b"])
        assert (published.ids, published.missing) == (["a"], ["b"])
        assert await state.tombstones() == {"b"}

    run(settings, scenario)


def test_a_replica_builds_from_redis_then_follows_the_feed(settings: Settings) -> None:
    async def scenario(world: World) -> None:
        rng = np.random.default_rng(1)
        await world.state.put_item_vectors(
            [f"i{n}" for n in range(50)], _unit(rng, 50), model_version=1
        )
        assert await world.follower.rebuild() == 50
        index = world.retriever.index
        fresh = _unit(rng, 1)
        await world.state.put_item_vectors(["new"], fresh, model_version=1)
        await world.state.put_item_meta("i1", ItemMeta(category="books"))
        await world.state.delete_items(["i2"])
        for entry in await world.state.read_feed(world.follower.position, block_ms=1000):
            await world.follower.apply(entry)
        await world.follower.settle()
        assert index.size == 50
        assert index.contains("new")
        assert not index.contains("i2")
        assert index.search(fresh, 1)[0].ids == ["new"]
        assert world.follower.catalog["i1"].category == "books"
        assert await world.state.read_feed(world.follower.position) == []

    run(settings, scenario)


def test_a_replica_whose_feed_position_was_trimmed_away_reloads_instead_of_skipping(
    settings: Settings,
) -> None:
    async def scenario(world: World) -> None:
        rng = np.random.default_rng(2)
        await world.state.put_item_vectors(["a", "b", "c"], _unit(rng, 3), model_version=1)
        assert await world.follower.rebuild() == 3
        client = redis_client(settings)
        short = RedisVectorState(client, redis_keys(settings), DIM, feed_retention_s=0.001)
        try:
            await short.delete_items(["b"])  # the follower is away: this entry gets trimmed
            for _ in range(200):  # trimming is approximate: whole nodes of ~100 entries go
                await short.delete_items(["none"])
            await asyncio.sleep(0.05)
            await short.put_item_vectors(["d"], _unit(rng, 1), model_version=2)
            assert not await short.feed_kept_since(world.follower.position)
            following = asyncio.create_task(world.follower.follow(block_ms=50, check_every_s=0))
            await asyncio.sleep(0.5)
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        finally:
            await client.aclose()
        assert sorted(world.follower.index.ids()) == ["a", "c", "d"]
        assert await world.state.feed_kept_since(world.follower.position)

    run(settings, scenario)


def test_the_index_switches_whole_versions_even_when_one_lands_while_it_reads(
    settings: Settings,
) -> None:
    async def scenario(world: World) -> None:
        rng = np.random.default_rng(2)
        ids = [f"i{n}" for n in range(30)]
        await world.state.put_item_vectors(ids, _unit(rng, 30), model_version=1)
        await world.follower.rebuild()
        index = world.retriever.index
        assert index.stamp.model_version == 1
        await world.state.put_item_vectors(ids[:10], _unit(rng, 10), model_version=2)
        first = await world.state.read_feed(world.follower.position)
        await world.state.put_item_vectors(ids[5:20], _unit(rng, 15), model_version=3)
        for entry in first:  # only version 2's entry has been read when version 3 lands
            await world.follower.apply(entry)
        await world.follower.settle()
        assert index.stamp.model_version == 3
        _, stored = await world.state.item_vectors(ids)
        np.testing.assert_array_equal(index.vectors(ids), stored)
        assert world.follower.served is not None
        assert world.follower.served.version == 3

    run(settings, scenario)


def test_a_version_that_retires_items_replaces_the_served_one_in_one_write(
    settings: Settings,
) -> None:
    """Its vectors and the items it no longer has change the index together: between two
    writes a request would see the old version's stamp without items that version has."""

    async def scenario(world: World) -> None:
        rng = np.random.default_rng(7)
        ids = [f"i{n}" for n in range(20)]
        await world.state.put_item_vectors(ids, _unit(rng, 20), model_version=1)
        await world.follower.rebuild()
        index = world.retriever.index
        await world.state.put_item_vectors(
            ids[:5], _unit(rng, 5), model_version=2, retired=["i19", "i18"]
        )
        for entry in await world.state.read_feed(world.follower.position):
            await world.follower.apply(entry)
        writes = index.version
        await world.follower.settle()
        assert index.version == writes + 1
        assert index.stamp.model_version == 2
        assert not index.contains("i19")
        assert not index.contains("i18")
        _, stored = await world.state.item_vectors(ids[:18])
        np.testing.assert_array_equal(index.vectors(ids[:18]), stored)

    run(settings, scenario)


def test_a_version_published_while_the_index_is_read_from_redis_is_whole_in_it(
    settings: Settings,
) -> None:
    """The build reads the catalogue in chunks; vectors published meanwhile are read again
    from the feed (not the whole catalogue again), so the ready index is that version."""

    async def scenario(world: World) -> None:
        rng = np.random.default_rng(5)
        ids = [f"i{n}" for n in range(600)]  # past 512: a hash table, scanned in chunks
        await world.state.put_item_vectors(ids, _unit(rng, 600), model_version=1)
        scan = world.state.all_item_vectors

        async def publishing_midway(
            chunk: int = 10_000,
        ) -> AsyncIterator[tuple[list[str], npt.NDArray[np.float32]]]:
            chunks = 0
            async for found in scan(chunk=50):
                yield found
                chunks += 1
                if chunks == 1:
                    await world.state.put_item_vectors(ids, _unit(rng, 600), model_version=2)
            assert chunks > 1

        world.state.all_item_vectors = publishing_midway  # type: ignore[method-assign]
        await world.follower.rebuild()
        index = world.retriever.index
        assert index.stamp.model_version == 2
        _, stored = await world.state.item_vectors(ids)
        np.testing.assert_array_equal(index.vectors(ids), stored)

    run(settings, scenario)


def test_filters_never_let_an_excluded_item_through(settings: Settings) -> None:
    items = [f"i{n}" for n in range(300)]
    seen, bought = set(items[:40]), set(items[40:50])

    async def setup(world: World) -> None:
        rng = np.random.default_rng(2)
        await world.state.put_item_vectors(items, _unit(rng, 300), model_version=1)
        for n, item in enumerate(items):
            meta = ItemMeta(category=f"c{n % 4}", in_stock=n % 3 != 0)
            await world.state.put_item_meta(item, meta)
        await world.follower.rebuild()
        await _clicks(world, "u1", sorted(seen))
        await _clicks(world, "u1", sorted(bought), kind="order")
        await world.state.put_user_vector("u1", _unit(rng, 1)[0], 1, 0)

    loop = asyncio.new_event_loop()
    world, close = loop.run_until_complete(_open(settings))
    try:
        loop.run_until_complete(setup(world))
        catalog = world.follower.catalog

        @hypothesis.settings(max_examples=60, deadline=None)
        @given(
            category=st.sampled_from([None, "c0", "c1", "c3", "missing"]),
            in_stock=st.sampled_from([None, True, False]),
            exclude=st.frozensets(st.sampled_from(items), max_size=80),
            exclude_seen=st.booleans(),
            k=st.integers(1, 120),
        )
        def check(
            category: str | None,
            in_stock: bool | None,
            exclude: frozenset[str],
            exclude_seen: bool,
            k: int,
        ) -> None:
            filters = Filters(category, in_stock, exclude, exclude_seen)
            answer = loop.run_until_complete(world.retriever.recommend("u1", k, filters))
            got = [s.item_id for s in answer.items]
            blocked = exclude | bought | (seen if exclude_seen else set())
            eligible = [
                i
                for i in items
                if i not in blocked
                and category in (None, catalog[i].category)
                and (not in_stock or catalog[i].in_stock)
            ]
            assert len(got) == len(set(got)) == min(k, len(eligible))
            assert set(got) <= set(eligible)
            assert answer.model_version == (1 if got else None)

        check()
    finally:
        loop.run_until_complete(close())
        loop.close()


def test_new_users_fall_back_to_recent_items_then_popular(settings: Settings) -> None:
    async def scenario(world: World) -> None:
        rng = np.random.default_rng(4)
        items = [f"i{n}" for n in range(20)]
        vectors = _unit(rng, 20)
        await world.state.put_item_vectors(items, vectors, model_version=1)
        await world.follower.rebuild()
        await _clicks(world, "crowd", ["i5"] * 3 + ["i6"] * 2)
        cold = await world.retriever.recommend("stranger", 2, Filters())
        assert [(s.item_id, s.reason) for s in cold.items] == [("i5", "popular"), ("i6", "popular")]
        await _clicks(world, "browser", ["i0"])
        warm = await world.retriever.recommend("browser", 25, Filters())
        assert warm.source == "similar_to_recent"
        assert warm.items[0].item_id == world.retriever.index.search(vectors[0], 2)[0].ids[1]
        assert len(warm.items) == 19
        assert "i0" not in {s.item_id for s in warm.items}

    run(settings, scenario)


def test_a_user_without_a_vector_of_the_served_version_is_embedded_on_the_event_loop(
    settings: Settings,
) -> None:
    """The fallback embedding (about 1 ms of torch) runs inline: in a worker thread each of
    its ops waited for the GIL behind the event loop, and the soak's query p99 went from
    66-70 ms to 189-572 ms (`python -m bench.soak --seconds 90`)."""

    class Encoder:
        def __init__(self) -> None:
            self.threads: list[int] = []

        def encode(
            self, model_version: int, user_id: str, history: Sequence[HistoryEntry]
        ) -> npt.NDArray[np.float32]:
            self.threads.append(threading.get_ident())
            vector: npt.NDArray[np.float32] = vectors[0]
            return vector

    async def scenario(world: World) -> None:
        await world.state.put_item_vectors(items, vectors, model_version=1)
        await world.follower.rebuild()
        await _clicks(world, "returning", ["i3"])
        retriever = world.retriever
        retriever.encoder = encoder = Encoder()
        answer = await retriever.recommend("returning", 3, Filters())
        assert answer.source == "personalized"
        assert answer.model_version == 1
        assert encoder.threads == [threading.get_ident()]

    items = [f"i{n}" for n in range(20)]
    vectors = _unit(np.random.default_rng(5), 20)
    run(settings, scenario)


def test_a_worker_embeds_a_few_users_on_the_event_loop_and_many_in_a_thread(
    settings: Settings,
) -> None:
    """As the API's fallback above: a worker's forward pass in a thread waited for the GIL at
    every op, and the soak's freshness p99 was 164-169 ms (84-117 ms inline); a backlog's
    big chunks still go to a thread, to overlap with the applies."""

    class Models:
        config = TwoTowerConfig()

        def __init__(self) -> None:
            self.threads: list[int] = []

        def get(self, version: int) -> Models:
            return self

        def embed(
            self, version: int, histories: Sequence[Sequence[Interaction]], now_ms: Sequence[int]
        ) -> npt.NDArray[np.float32]:
            self.threads.append(threading.get_ident())
            return np.tile(vectors[0], (len(histories), 1))

    async def scenario(world: World) -> None:
        await world.state.put_item_vectors(items, vectors, model_version=1)
        await _clicks(world, "u1", ["i1"])
        await _clicks(world, "u2", ["i2", "i3"])
        models = Models()
        writer = UserVectorWriter(world.interactions, world.state, cast(ServingModels, models), 8)
        assert await writer.refresh(["u1", "u2", "nobody"]) == 2
        assert models.threads == [threading.get_ident()]
        stored = await world.state.user_vector("u2")
        assert stored is not None
        assert (stored.model_version, stored.as_of_event_id) == (1, "u2-click-1")

        many = [f"m{n}" for n in range(INLINE_USERS + 1)]
        for user in many:
            await _clicks(world, user, ["i4"])
        writer = UserVectorWriter(world.interactions, world.state, cast(ServingModels, models), 64)
        assert await writer.refresh(many) == len(many)
        assert len(models.threads) == 2
        assert models.threads[1] != threading.get_ident()
        assert await world.state.user_vector(many[-1]) is not None

    items = [f"i{n}" for n in range(20)]
    vectors = _unit(np.random.default_rng(6), 20)
    run(settings, scenario)


def test_similar_items_excludes_the_item_and_rejects_unknown_ids(settings: Settings) -> None:
    async def scenario(world: World) -> None:
        rng = np.random.default_rng(5)
        await world.state.put_item_vectors(
            [f"i{n}" for n in range(30)], _unit(rng, 30), model_version=1
        )
        await world.follower.rebuild()
        similar = await world.retriever.similar_items("i3", 5, Filters(exclude=frozenset({"i4"})))
        assert len(similar) == 5
        assert {"i3", "i4"}.isdisjoint(s.item_id for s in similar)
        assert all(s.reason == "similar_item" for s in similar)
        with pytest.raises(UnknownItemError):
            await world.retriever.similar_items("nope", 5, Filters())

    run(settings, scenario)


def test_trending_ranks_by_decayed_popularity(settings: Settings) -> None:
    async def scenario(world: World) -> None:
        day = 86_400_000
        start = 1_767_225_600_000
        await _clicks(world, "u", ["old-hit"] * 5, start_ms=start)
        await _clicks(world, "v", ["new-hit"] * 2, start_ms=start + 10 * day)
        trending = await world.interactions.top_items("trending", 2)
        assert [item for item, _ in trending] == ["new-hit", "old-hit"]
        assert [item for item, _ in await world.interactions.top_items("clicks", 2)] == [
            "old-hit",
            "new-hit",
        ]
        cold = await world.retriever.recommend("stranger", 1, Filters())
        assert [(s.item_id, s.reason) for s in cold.items] == [("new-hit", "popular")]

    run(settings, scenario)


def test_a_cancelled_follower_stops_within_one_feed_poll(settings: Settings) -> None:
    """A cancel that lands inside a blocking read is absorbed by redis-py; the follower
    must still stop once that read returns (it used to retry forever)."""

    async def scenario(world: World) -> None:
        for delay_ms in range(0, 12):
            task = asyncio.create_task(world.follower.run(block_ms=200))
            await asyncio.sleep(delay_ms / 2_000)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=1.0)
            assert done == {task}, f"still running after cancel at {delay_ms / 2} ms"
            assert task.cancelled()

    run(settings, scenario)


def test_with_repeats_the_users_own_items_come_first_most_often_then_most_recent(
    settings: Settings,
) -> None:
    async def scenario(world: World) -> None:
        rng = np.random.default_rng(6)
        items = [f"i{n}" for n in range(30)]
        await world.state.put_item_vectors(items, _unit(rng, 30), model_version=1)
        await world.follower.rebuild()
        await _clicks(world, "shopper", ["i1", "i2", "i1", "i3", "i1", "i2"], kind="order")
        await _clicks(world, "shopper", ["i4"], start_ms=100)
        await world.state.put_user_vector("shopper", _unit(rng, 1)[0], 1, 0)
        again = await world.retriever.recommend("shopper", 6, Filters(repeats=True))
        own = [(s.item_id, s.reason, s.score) for s in again.items[:3]]
        assert own == [("i1", "repeat", 3.0), ("i2", "repeat", 2.0), ("i4", "repeat", 1.0)]
        assert again.source == "repeat"
        assert [s.reason for s in again.items[3:]] == ["personalized"] * 3
        assert again.model_version == 1
        plain = await world.retriever.recommend("shopper", 6, Filters())
        assert not {"i1", "i2", "i3"} & {s.item_id for s in plain.items}
        assert {s.reason for s in plain.items} == {"personalized"}
        unmodelled = await world.retriever.recommend("new-shopper", 3, Filters(repeats=True))
        assert unmodelled.model_version is None

    run(settings, scenario)


def test_a_filter_nothing_matches_searches_at_most_max_scan_items(settings: Settings) -> None:
    """An impossible filter must not make one request scan the whole catalogue (at 1M items
    that froze a replica); past `max_scan` the popular fallback has its turn. A category no
    item has is not searched at all."""

    async def scenario(world: World) -> None:
        rng = np.random.default_rng(6)
        n = 2_000
        await world.state.put_item_vectors([f"i{k}" for k in range(n)], _unit(rng, n), 1)
        for k in range(n):  # one big category, all out of stock
            await world.state.put_item_meta(f"i{k}", ItemMeta("big", in_stock=False))
        await world.follower.rebuild()
        retriever = world.retriever
        retriever.max_scan = 300
        fetched: list[int] = []
        search = retriever.index.search

        def counted(vector: npt.NDArray[np.float32], k: int, among: Any = None) -> Any:
            fetched.append(k)
            return search(vector, k, among)

        retriever.index.search = counted  # type: ignore[method-assign,assignment]
        assert await retriever.similar_items("i1", 5, Filters(category="nothing-has-it")) == []
        assert fetched == []
        in_stock = Filters(category="big", in_stock=True)
        assert await retriever.similar_items("i1", 5, in_stock) == []
        assert fetched
        assert max(fetched) <= 300

    run(settings, scenario)


def test_a_small_categorys_items_are_found_whatever_the_index_holds_nearer(
    settings: Settings,
) -> None:
    """A category of 20 items among 3,000 whose vectors lie far from the query: its true
    top-5 comes back, from one exact search among the category (the whole-index search
    would have had to widen past `max_scan`)."""

    async def scenario(world: World) -> None:
        rng = np.random.default_rng(8)
        n = 3_000
        vectors = _unit(rng, n)
        ids = [f"i{k}" for k in range(n)]
        await world.state.put_item_vectors(ids, vectors, 1)
        rare = ids[::150]
        for item in rare:
            await world.state.put_item_meta(item, ItemMeta("rare"))
        await world.follower.rebuild()
        retriever = world.retriever
        retriever.max_scan = 50  # the old way could not have reached them
        found = await retriever.similar_items("i1", 5, Filters(category="rare"))
        scores = {i: float(vectors[int(i[1:])] @ vectors[1]) for i in rare if i != "i1"}
        best = sorted(scores, key=lambda i: -scores[i])[:5]
        assert [s.item_id for s in found] == best

    run(settings, scenario)


def test_a_follower_stops_even_when_redis_py_absorbed_its_cancellation(
    settings: Settings,
) -> None:
    """A cancel that redis-py's read timeout swallows (`uncancel`) left the replica's shutdown
    waiting for the follower for ever; `stop` ends it within one feed poll."""

    async def scenario(world: World) -> None:
        read_feed = world.follower.state.read_feed

        async def absorbing(*args: Any, **kwargs: Any) -> Any:
            try:
                return await read_feed(*args, **kwargs)
            except asyncio.CancelledError:  # as a timeout inside a Redis read may do
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                return []

        world.follower.state.read_feed = absorbing  # type: ignore[method-assign]
        following = asyncio.create_task(world.follower.run(block_ms=200))
        # built first: on a loaded box the build outlasted the 0.5 s below, and a cancel
        # during the build ends the follower outright; this one lands in a feed read
        await asyncio.wait_for(world.follower.ready.wait(), 30)
        await asyncio.sleep(0.5)
        following.cancel()
        await asyncio.sleep(0.5)
        assert not following.done()  # the absorbed cancel alone did not stop it
        world.follower.stop()
        done, _ = await asyncio.wait([following], timeout=3)
        assert following in done

    run(settings, scenario)
