"""The interaction store against real Redis: histories stay in event-time order whatever the
order events arrive in (a replay after newer events), within their cap, each event once."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from model.interaction import Interaction
from store.interaction_store import EventEffect, RedisInteractionStore
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
