"""Faust's aiokafka transport with a configurable fetch wait, for low produce-to-effect latency,
assignments that resume from where the app says its effects reach, and whole fetches of the
ingest topics handed on as batches (`BatchChannel`).

Faust 0.15 hard-codes `fetch_max_wait_ms=1500` for worker consumers. A broker that does not
answer a long-poll fetch as soon as data arrives then adds up to that wait to every event;
measured with the test broker: ~750 ms per event at 1500 ms, a few ms at 20 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

import aiokafka
import faust
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message, TransportT
from mode import Service, ServiceT

from stream.ingest.batches import BatchChannel

ResumeOffsets = Callable[[Iterable[TP], Mapping[TP, int | None]], Awaitable[dict[TP, int]]]


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        app = self.app
        if isinstance(app, LowLatencyApp):
            # aiokafka reads this when it builds its fetcher in start().
            consumer._fetch_max_wait_ms = app.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Faust's fetch loop, except that records of the app's batch topics go to its
        `BatchChannel` a whole fetch at a time instead of through the conductor one by one."""
        app = self.app
        channel = app.batches if isinstance(app, LowLatencyApp) else None
        if channel is None:
            await super()._drain_messages(fetcher)
            return
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                records, active = await self._wait_next_records(timeout=1.0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:  # fetched as a rebalance began: read again after it
                    await self.perform_seek()
                    continue
                await self._deliver(records, active, channel)
        except self.consumer_stopped_errors:
            if not app.should_stop:
                raise
        except asyncio.CancelledError:
            if not app.should_stop:
                raise

    async def _deliver(
        self, records: RecordMap, active: set[TP] | None, channel: BatchChannel
    ) -> None:
        """One fetch's records: batch topics' to the channel, any other topic's to Faust."""
        batch: list[Message] = []
        for tp, tp_records in records.items():
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if tp.topic not in channel.topics:
                for record in tp_records:
                    await self.callback(self._to_message(tp, record))
                    self._read_offset[tp] = record.offset
                continue
            read = self._read_offset[tp]
            acks_enabled = self.app.topics.acks_enabled_for(tp.topic)
            for record in tp_records:
                offset = record.offset
                if read is not None and offset < read:
                    continue  # before where this partition was sought to: Faust drops it too
                if read is not None and offset - read > 1 and acks_enabled:
                    await self._add_gap(tp, read + 1, offset)  # so commits pass the hole
                batch.append(self._to_message(tp, record))
                read = offset
            self._read_offset[tp] = read
        if batch:
            await self.wait_first(channel.put(batch), self.suspend_flow.wait())

    async def perform_seek(self) -> None:
        """Seek to the committed offsets, then to the app's resume offsets where it has one
        (behind or ahead of the committed ones): where the effects really reach."""
        await super().perform_seek()
        app = self.app
        if not isinstance(app, LowLatencyApp) or app.resume_offsets is None:
            return
        assignment = self.assignment()
        committed = {tp: self._read_offset.get(tp) for tp in assignment}
        for tp, offset in (await app.resume_offsets(assignment, committed)).items():
            await self.seek(tp, offset)
            self._committed_offset[tp] = offset  # what Faust counts acks from

    async def rejoin(self) -> None:
        """Ask the group for a new assignment (revoke, assign, seek) without leaving it."""
        thread = self._thread

        async def request() -> None:
            thread._ensure_consumer()._coordinator.request_rejoin()

        await thread.call_thread(request)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class LowLatencyApp(faust.App):
    """A Faust app whose consumers long-poll the broker for at most `fetch_max_wait_ms`."""

    def __init__(
        self,
        id: str,
        *,
        fetch_max_wait_ms: int,
        **options: Any,
    ) -> None:
        super().__init__(id, **options)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.resume_offsets: ResumeOffsets | None = None
        self.batches: BatchChannel | None = None  # topics whose fetches go to it whole
        self._preparations: list[Callable[[], Awaitable[None]]] = []

    def before_consuming(self, prepare: Callable[[], Awaitable[None]]) -> None:
        """Run `prepare` as the app starts, before its consumer joins the group (Faust starts
        tasks only once the first assignment is sought)."""
        self._preparations.append(prepare)

    async def on_start(self) -> None:
        await super().on_start()
        for prepare in self._preparations:
            await prepare()

    async def rejoin_group(self) -> None:
        """Make the group assign this worker's partitions anew (they are sought again)."""
        consumer = self.consumer
        if not isinstance(consumer, _Consumer):
            raise TypeError(f"expected this transport's consumer, got {type(consumer).__name__}")
        await consumer.rejoin()

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)
