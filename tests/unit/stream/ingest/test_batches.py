"""The batch channel between the worker's consumer and its ingest task."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from faust.types import Message
from mode.utils.queues import FlowControlEvent

from stream.ingest.batches import BatchChannel


def _messages(n: int) -> list[Message]:
    return cast(list[Message], [object() for _ in range(n)])


def test_a_fetch_is_handed_on_in_chunks_of_at_most_the_batch_size_in_order() -> None:
    async def run() -> list[list[Any]]:
        flow = FlowControlEvent(initially_suspended=False)
        channel = BatchChannel(["clicks"], max_batch=4, flow_control=flow)
        fetched = _messages(10)
        putting = asyncio.ensure_future(channel.put(fetched))
        batches = [await channel.get() for _ in range(3)]
        await putting
        assert [m for batch in batches for m in batch] == fetched
        return batches

    assert [len(b) for b in asyncio.run(run())] == [4, 4, 2]


def test_a_rebalance_clears_what_the_channel_holds_so_it_is_read_again() -> None:
    async def run() -> None:
        flow = FlowControlEvent(initially_suspended=False)
        channel = BatchChannel(["clicks"], max_batch=4, flow_control=flow)
        await channel.put(_messages(4))
        flow.suspend()
        flow.clear()  # what Faust does on revoke
        flow.resume()
        await channel.put(after := _messages(2))
        assert await channel.get() == after

    asyncio.run(run())
