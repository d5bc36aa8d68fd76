"""The interaction store against real Redis: histories stay in event-time order whatever the
order events arrive in (a replay after newer events), within their cap, each event once."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from model.interaction import EventEffect, Interaction
from store.interaction_store import RedisInteractionStore
from store.redis_keys import RedisKeys
from stream.config import Settings

pytestmark = pytest.mark.integration


def _click(n: int, ts_ms: int) -> EventEffect:
    return EventEffect(f"e{n}", "u", (Interaction("u", f"i{n}", "click", ts_ms),))


def test_late_events_take_their_place_in_time_and_the_cap_keeps_the_newest(
    settings: Settings,
) -> None:
    async def run() -> tuple[list[str], list[bool]]:
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
    assert late == [True, True, False]
    assert order == ["e7", "e6", "e5", "e3"]


def test_each_event_is_applied_once_its_records_and_the_users_keys_expire(
    settings: Settings,
) -> None:
    async def run() -> tuple[list[bool], list[bool], int, int, list[int]]:
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
    assert all(first)
    assert not any(again)
    assert fingerprints == 120
    assert buckets <= 120
    assert all(0 < t <= 600 for t in ttls[:3])
    assert 600 < ttls[3] <= 3_600
    assert 600 < ttls[4] <= 3_600
