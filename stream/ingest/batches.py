"""Whole fetches of the ingest topics, handed to one task as batches.

Faust delivers each record on its own: a task pair raced per record in the fetcher, an event
object and a queue hop per record in the conductor, a future per record in the stream. At
thousands of events a second that bookkeeping costs more than decoding and applying them. The
worker's consumer instead hands what one fetch returned for these topics to a `BatchChannel`,
in chunks of at most `max_batch` messages; the ingest task applies each chunk with one Redis
call and then acks its messages, and Faust commits acked offsets as before. The channel is a
Faust flow-controlled queue: a rebalance suspends it and clears what it holds (the messages are
read again from the committed offsets), just as it does the streams' queues.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from faust.types import Message
from mode.utils.queues import FlowControlEvent, FlowControlQueue

QUEUED_BATCHES = 2  # fetched ahead while one batch is applied: enough to overlap, bounded


class BatchChannel:
    """Batches of fetched messages of `topics`, from the consumer to the ingest task; managed
    by the app's flow control."""

    def __init__(
        self, topics: Iterable[str], max_batch: int, flow_control: FlowControlEvent
    ) -> None:
        self.topics = frozenset(topics)
        self.max_batch = max_batch
        self._queue: FlowControlQueue[list[Message]] = FlowControlQueue(
            maxsize=QUEUED_BATCHES, flow_control=flow_control, clear_on_resume=True
        )

    async def put(self, messages: Sequence[Message]) -> None:
        """Queue `messages` in chunks of at most `max_batch`; waits while the queue is full
        or flow is suspended (a rebalance)."""
        for start in range(0, len(messages), self.max_batch):
            await self._queue.put(list(messages[start : start + self.max_batch]))

    async def get(self) -> list[Message]:
        """The next batch, in fetch order."""
        return await self._queue.get()
