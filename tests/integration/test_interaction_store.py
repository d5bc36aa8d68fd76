"""The interaction store against real Redis: histories stay in event-time order whatever the
order events arrive in (a replay after newer events), within their cap, each event once."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from model.interaction import EventEffect, Interaction
from store.interaction_store import (
    MAX_WORK_PER_SCRIPT,
    Applied,
    AppliedOffsetsMovedError,
    PartitionAdvance,
    RedisInteractionStore,
)
from store.redis_keys import RedisKeys, as_text
from stream.config import Settings

pytestmark = pytest.mark.integration


def _click(n: int, ts_ms: int) -> EventEffect:
    return EventEffect(f"e{n}", "u", (Interaction("u", f"i{n}", "click", ts_ms),))


def test_late_events_take_their_place_in_time_and_the_cap_keeps_the_newest(
    settings: Settings,
) -> None:
    async def run() -> tuple[list[str], list[Applied]]:
        client = aioredis.from_url(settings.redis_url)
        store = RedisInteractionStore(client, RedisKeys(settings.keys_prefix), history_len=4)
        try:
            await store.apply_many([_click(5, 5_000), _click(7, 7_000)])
            late = await store.apply_many([_click(6, 6_000), _click(1, 1_000), _click(6, 6_000)])
            await store.apply_many([_click(3, 3_000)])
            await store.apply_many([_click(0, 500)])  # older than all four kept: not kept
            return [h.event_id for h in await store.history("u")], late
        finally:
            await client.aclose()

    order, late = asyncio.run(run())
    assert late == [Applied.NEW, Applied.NEW, Applied.DUPLICATE]
    assert order == ["e7", "e6", "e5", "e3"]


def test_each_event_is_applied_once_its_records_and_the_users_keys_expire(
    settings: Settings,
) -> None:
    async def run() -> tuple[list[Applied], list[Applied], int, int, list[int]]:
        client = aioredis.from_url(settings.redis_url)
        keys = RedisKeys(settings.keys_prefix)
        store = RedisInteractionStore(client, keys, dedup_ttl_s=600, user_ttl_s=3_600)
        try:
            hour = 3_600_000
            events = [_click(n, 1_000_000 * hour + n * 60_000) for n in range(120)]
            first = await store.apply_many(events)
            again = await store.apply_many(events[::-1])
            records = [k async for k in client.scan_iter(match=f"{keys.prefix}seen:*")]
            fingerprints = sum([await client.scard(k) for k in records])
            ttls = [await client.ttl(k) for k in (*records[:3], keys.history("u"))]
            await client.sadd(keys.purchased("u"), "x")  # an order's set gets the user ttl too
            await store.apply_many(
                [EventEffect("o1", "u", (Interaction("u", "i1", "order", hour, 2),))]
            )
            ttls.append(await client.ttl(keys.purchased("u")))
            return first, again, len(records), fingerprints, ttls
        finally:
            await client.aclose()

    first, again, buckets, fingerprints, ttls = asyncio.run(run())
    assert set(first) == {Applied.NEW}
    assert set(again) == {Applied.DUPLICATE}
    assert fingerprints == 240  # an id's and an id-and-content's each
    assert buckets <= 120
    assert all(600 < t <= 2 * 600 + 60 for t in ttls[:3])  # one to two horizons
    assert 600 < ttls[3] <= 3_600
    assert 600 < ttls[4] <= 3_600


def test_an_event_whose_user_key_holds_another_type_writes_nothing_and_the_rest_apply(
    settings: Settings,
) -> None:
    """A script error after a write would leave its event half applied with its idempotency
    record set, so a retry would count it a duplicate: such an event is refused whole."""

    async def run() -> tuple[
        list[Applied], list[Applied], dict[bytes | str, bytes | str], int, int
    ]:
        client = aioredis.from_url(settings.redis_url)
        keys = RedisKeys(settings.keys_prefix)
        store = RedisInteractionStore(client, keys)
        try:
            await client.set(keys.history("broken"), "not a sorted set")
            broken = EventEffect("b1", "broken", (Interaction("broken", "i9", "click", 5),))
            first = await store.apply_many([_click(1, 1_000), broken, _click(2, 2_000)])
            await client.delete(keys.history("broken"))
            again = await store.apply_many([broken])  # once mended, it applies
            return (
                first,
                again,
                await client.hgetall(keys.stats),
                await client.zcard(keys.history("u")),
                await client.zcard(keys.history("broken")),
            )
        finally:
            await client.aclose()

    first, again, stats, kept, mended = asyncio.run(run())
    assert first == [Applied.NEW, Applied.UNUSABLE_KEYS, Applied.NEW]
    assert again == [Applied.NEW]
    assert stats == {b"applied": b"3"}
    assert (kept, mended) == (2, 1)


def test_item_counters_keep_the_top_items_not_every_id_a_producer_ever_sent(
    settings: Settings,
) -> None:
    """Producer-chosen item ids are unbounded; the popularity sets keep the `counters_kept`
    most popular (trimmed back when they reach twice that)."""

    async def run() -> tuple[list[int], list[tuple[str, float]]]:
        client = aioredis.from_url(settings.redis_url)
        keys = RedisKeys(settings.keys_prefix)
        store = RedisInteractionStore(client, keys, counters_kept=10)
        try:
            popular = [
                EventEffect(f"p{n}", "u", (Interaction("u", "hit", "click", n),)) for n in range(5)
            ]
            await store.apply_many(popular)
            one_offs = [
                EventEffect(f"o{n}", "v", (Interaction("v", f"rare{n}", "click", 100 + n),))
                for n in range(50)
            ]
            for start in range(0, 50, 5):
                await store.apply_many(one_offs[start : start + 5])
            sizes = [await client.zcard(k) for k in (keys.item_clicks, keys.item_trending)]
            return sizes, await store.top_items("clicks", 1)
        finally:
            await client.aclose()

    sizes, top = asyncio.run(run())
    assert all(size <= 20 for size in sizes), sizes
    assert top == [("hit", 5.0)]


def test_partition_offsets_are_written_with_the_effects_and_a_moved_offset_writes_nothing(
    settings: Settings,
) -> None:
    async def run() -> tuple[dict[str, int], dict[str, int], int]:
        client = aioredis.from_url(settings.redis_url)
        store = RedisInteractionStore(client, RedisKeys(settings.keys_prefix))
        try:
            await store.apply_many([_click(1, 1_000)], [PartitionAdvance("t:0", None, 10)])
            await store.apply_many(  # an older redelivery does not move it back
                [_click(2, 2_000)],
                [PartitionAdvance("t:0", 10, 7), PartitionAdvance("t:1", "*", 3)],
            )
            first = await store.applied_offsets(["t:0", "t:1", "t:2"])
            with pytest.raises(AppliedOffsetsMovedError):  # Redis holds 10, not 12
                await store.apply_many([_click(3, 3_000)], [PartitionAdvance("t:0", 12, 20)])
            with pytest.raises(AppliedOffsetsMovedError):  # Redis holds one, none expected
                await store.apply_many([_click(3, 3_000)], [PartitionAdvance("t:1", None, 20)])
            after = await store.applied_offsets(["t:0", "t:1"])
            return first, after, len(await store.history("u"))
        finally:
            await client.aclose()

    first, after, history = asyncio.run(run())
    assert first == {"t:0": 10, "t:1": 3}
    assert after == first
    assert history == 2  # e3 was written by neither refused call


def _click_at(event_id: str, item: str, ts_ms: int) -> EventEffect:
    return EventEffect(event_id, "u", (Interaction("u", item, "click", ts_ms),))


def test_an_event_id_is_applied_once_whatever_its_time_and_other_content_is_a_conflict(
    settings: Settings,
) -> None:
    async def run() -> tuple[list[Applied], list[str], dict[str, int]]:
        client = aioredis.from_url(settings.redis_url)
        store = RedisInteractionStore(client, RedisKeys(settings.keys_prefix))
        try:
            hour = 3_600_000
            first = _click_at("e1", "a", 1_000_000 * hour)
            outcomes = await store.apply_many(
                [
                    first,
                    _click_at("e1", "a", 1_000_000 * hour),  # the same event again
                    _click_at("e1", "a", 1_000_005 * hour),  # same id, another hour
                    _click_at("e1", "b", 1_000_000 * hour),  # same id and hour, other item
                ]
            )
            history = [h.item_id for h in await store.history("u")]
            stats = await client.hgetall(RedisKeys(settings.keys_prefix).stats)
            return outcomes, history, {as_text(k): int(v) for k, v in stats.items()}
        finally:
            await client.aclose()

    outcomes, history, stats = asyncio.run(run())
    assert outcomes == [Applied.NEW, Applied.DUPLICATE, Applied.CONFLICT, Applied.CONFLICT]
    assert history == ["a"]
    assert stats == {"applied": 1, "duplicates": 1}  # the worker dead-letters conflicts


def test_histories_are_idempotent_on_the_event_even_once_its_record_is_gone(
    settings: Settings,
) -> None:
    async def run() -> list[str]:
        client = aioredis.from_url(settings.redis_url)
        keys = RedisKeys(settings.keys_prefix)
        store = RedisInteractionStore(client, keys)
        try:
            order = EventEffect(
                "o1",
                "u",
                tuple(Interaction("u", f"i{n}", "order", 5_000, 1) for n in range(12)),
            )
            await store.apply_many([_click_at("e1", "a", 1_000), order])
            async for key in client.scan_iter(match=f"{keys.prefix}seen:*"):
                await client.delete(key)  # the idempotency records expired
            await store.apply_many([order, _click_at("e1", "a", 1_000)])
            return [h.item_id for h in await store.history("u")]
        finally:
            await client.aclose()

    history = asyncio.run(run())
    assert history == [f"i{n}" for n in reversed(range(12))] + ["a"]  # lines newest first


def test_histories_are_sorted_by_time_and_a_list_left_by_an_older_version_is_migrated(
    settings: Settings,
) -> None:
    async def run() -> tuple[list[str], list[str], str, int]:
        client = aioredis.from_url(settings.redis_url)
        keys = RedisKeys(settings.keys_prefix)
        store = RedisInteractionStore(client, keys, history_len=3)
        legacy = [  # newest first, as older versions kept them
            {"item_id": "b", "kind": "click", "ts_ms": 2_000, "event_id": "old2"},
            {"item_id": "a", "kind": "click", "ts_ms": 1_000, "event_id": "old1"},
        ]
        try:
            await client.rpush(keys.history("u"), *[json.dumps(e) for e in legacy])
            before = [h.item_id for h in await store.history("u")]  # read while still a list
            await store.apply_many([_click_at("e3", "c", 1_500), _click_at("e4", "d", 3_000)])
            after = [h.item_id for h in await store.history("u")]
            kind = as_text(await client.type(keys.history("u")))
            return before, after, kind, await client.zcard(keys.history("u"))
        finally:
            await client.aclose()

    before, after, kind, size = asyncio.run(run())
    assert before == ["b", "a"]
    assert after == ["d", "b", "c"]  # the oldest went past the cap of 3
    assert (kind, size) == ("zset", 3)


def test_a_users_purchased_items_keep_the_newest_within_their_cap_and_an_old_set_migrates(
    settings: Settings,
) -> None:
    async def run() -> tuple[set[str], set[str], str]:
        client = aioredis.from_url(settings.redis_url)
        keys = RedisKeys(settings.keys_prefix)
        store = RedisInteractionStore(client, keys, purchased_kept=3)
        try:
            await client.sadd(keys.purchased("u"), "legacy")  # as older versions kept it
            before = await store.purchased("u")
            for n in range(5):
                line = Interaction("u", f"i{n}", "order", 1_000 + n, 1)
                await store.apply_many([EventEffect(f"o{n}", "u", (line,))])
            return (
                before,
                await store.purchased("u"),
                as_text(await client.type(keys.purchased("u"))),
            )
        finally:
            await client.aclose()

    before, after, kind = asyncio.run(run())
    assert before == {"legacy"}
    assert after == {"i2", "i3", "i4"}  # the newest three
    assert kind == "zset"


def test_a_big_batch_goes_in_scripts_of_bounded_work_and_offsets_ride_with_the_last(
    settings: Settings,
) -> None:
    """One script must not hold Redis for long: 30 orders of 100 lines (3,030 work) take
    several scripts, each event whole in one of them."""

    async def run() -> tuple[int, list[Applied], dict[str, int], int]:
        client = aioredis.from_url(settings.redis_url)
        store = RedisInteractionStore(client, RedisKeys(settings.keys_prefix))
        try:
            before = (await client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
            orders = [
                EventEffect(
                    f"o{n}",
                    f"u{n}",
                    tuple(Interaction(f"u{n}", f"i{k}", "order", 1_000, 1) for k in range(100)),
                )
                for n in range(30)
            ]
            outcomes = await store.apply_many(orders, [PartitionAdvance("t:0", None, 29)])
            after = (await client.info("commandstats"))["cmdstat_evalsha"]["calls"]
            offsets = await store.applied_offsets(["t:0"])
            return int(after) - int(before), outcomes, offsets, len(await store.history("u7"))
        finally:
            await client.aclose()

    scripts, outcomes, offsets, history = asyncio.run(run())
    assert scripts >= 3030 // MAX_WORK_PER_SCRIPT
    assert outcomes == [Applied.NEW] * 30
    assert offsets == {"t:0": 29}
    assert history == 100
