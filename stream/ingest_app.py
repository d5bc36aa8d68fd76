"""The Faust ingest worker: thin agents that decode, de-duplicate and apply events to Redis.

Offsets are acked only after a batch's effects are in Redis (or its bad messages are in the
dead-letter topic), so delivery is at-least-once; effects are idempotent on `event_id`, so
the outcome is exactly-once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import faust
import redis.asyncio as aioredis
from faust.types import TP, ConsumerT, EventT, StreamT, TopicT

from model.checkpoints import CheckpointStore
from model.serving_models import ServingModels
from store.interaction_store import EventEffect, RedisInteractionStore
from stream.config import Settings
from stream.handlers import DeadLetter, SourcePosition, handle_message
from stream.kafka_transport import LowLatencyApp
from stream.namespace_watch import NamespaceWatch
from stream.process_metrics import WorkerMetrics
from stream.pseudonyms import Pseudonyms
from stream.retrying import retrying
from stream.stores import interaction_store, vector_state
from stream.topics import TopicNames
from stream.user_vectors import UserVectorWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Pending:
    effect: EventEffect
    source: SourcePosition
    key: bytes | None
    payload: bytes
    produced_s: float


class ProcessedOffsets:
    """The last offset handled per partition, to tell how far behind the worker is."""

    def __init__(self) -> None:
        self._last: dict[TP, int] = {}

    def seen(self, tp: TP, offset: int) -> None:
        self._last[tp] = offset

    def lag(self, consumer: ConsumerT) -> int:
        """Messages behind the high watermark, over the partitions assigned now."""
        total = 0
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                total += max(0, highwater - self._last.get(tp, -1) - 1)
        return total


class IngestProcessor:
    """Applies one batch of Kafka messages: effects to Redis, bad messages to the DLQ, then
    re-embeds the batch's users with the served model version."""

    def __init__(
        self,
        store: RedisInteractionStore,
        users: UserVectorWriter | None,
        dlq: TopicT,
        max_event_bytes: int,
        metrics: WorkerMetrics | None = None,
        offsets: ProcessedOffsets | None = None,
        pseudonyms: Pseudonyms | None = None,
    ) -> None:
        self._store = store
        self._dlq = dlq
        self._max_event_bytes = max_event_bytes
        self._users = users
        self._metrics = metrics or WorkerMetrics.create()
        self.offsets = offsets or ProcessedOffsets()
        self._pseudonyms = pseudonyms

    def retarget(self, store: RedisInteractionStore, users: UserVectorWriter | None) -> None:
        """Write to another namespace from the next batch on (a promote or a rollback)."""
        self._store = store
        self._users = users

    async def process(self, events: Sequence[EventT[bytes]]) -> None:
        pending: list[_Pending] = []
        for event in events:
            msg = event.message
            source = SourcePosition(msg.topic, msg.partition, msg.offset)
            self.offsets.seen(msg.tp, msg.offset)
            key = msg.key if isinstance(msg.key, bytes) or msg.key is None else bytes(msg.key)
            value = (
                msg.value if isinstance(msg.value, bytes) or msg.value is None else bytes(msg.value)
            )
            outcome = handle_message(value, key, source, self._max_event_bytes, self._pseudonyms)
            if isinstance(outcome, DeadLetter):
                await self._dead_letter(outcome)
            else:
                pending.append(_Pending(outcome, source, key, value or b"", msg.timestamp))
        await self._apply(pending)
        if self._users is not None and pending:
            users = list(dict.fromkeys(p.effect.user_id for p in pending))
            try:
                written = await retrying(partial(self._users.refresh, users))
            except Exception:
                log.exception("re-embedding %d users failed; their vectors stay older", len(users))
                return
            self._metrics.user_vectors.inc(written)
            if written:  # freshness counts events whose user vector now reflects them
                now = time.time()
                for item in pending:
                    self._metrics.freshness.observe(max(0.0, now - item.produced_s))

    async def _apply(self, pending: list[_Pending]) -> None:
        if not pending:
            return
        try:
            applied = await retrying(partial(self._store.apply_many, [p.effect for p in pending]))
            self._metrics.events.inc(sum(applied))
        except Exception:
            log.exception("batch apply failed; applying its %d events one by one", len(pending))
            for item in pending:
                try:
                    applied = await retrying(partial(self._store.apply_many, [item.effect]))
                    self._metrics.events.inc(sum(applied))
                except Exception as error:
                    reason = f"handler error: {type(error).__name__}: {error}"
                    await self._dead_letter(DeadLetter(reason, item.source, item.key, item.payload))

    async def _dead_letter(self, letter: DeadLetter) -> None:
        source = str(letter.source)
        if await retrying(partial(self._store.was_dead_lettered, source)):
            return
        log.warning("dead-lettering %s: %s", source, letter.reason)
        delivery = await self._dlq.send(key=letter.key, value=letter.to_json())
        await delivery
        self._metrics.dead_letters.inc()
        await retrying(partial(self._store.mark_dead_lettered, source))


def _sinks(
    settings: Settings, client: aioredis.Redis
) -> tuple[RedisInteractionStore, UserVectorWriter]:
    """Where a namespace's ingest effects and user vectors go."""
    store = interaction_store(settings, client)
    models = ServingModels(CheckpointStore(settings.checkpoint_dir, settings.checkpoint_keep))
    state = vector_state(settings, client)
    return store, UserVectorWriter(store, state, models, settings.embed_batch)


def _broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def create_ingest_app(settings: Settings, metrics: WorkerMetrics | None = None) -> faust.App:
    """The Faust app with the ingest agent, configured from `settings`."""
    session_timeout = settings.session_timeout_s
    datadir = settings.data_dir / "worker" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = LowLatencyApp(
        settings.app_id,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        broker=_broker_urls(settings.kafka_bootstrap),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session_timeout,
        broker_heartbeat_interval=session_timeout / 3,
        broker_request_timeout=max(40.0, session_timeout * 2),
        broker_commit_interval=settings.commit_interval_s,
        producer_acks=-1,
        stream_wait_empty=False,
        web_enabled=False,
        datadir=str(datadir),
    )
    metrics = metrics or WorkerMetrics.create()
    processed = ProcessedOffsets()
    names = TopicNames.from_settings(settings)
    ingest_topic = app.topic(*names.ingest, key_type=bytes, value_type=bytes)
    dlq_topic = app.topic(names.dlq, key_type=bytes, value_type=bytes)

    @app.agent(ingest_topic, name="ingest")
    async def ingest(stream: StreamT[bytes]) -> None:
        client = aioredis.from_url(settings.redis_url)
        watch = NamespaceWatch(settings, client)
        name = await watch.current()
        processor = IngestProcessor(
            *_sinks(watch.settings_of(name), client),
            dlq_topic,
            settings.max_event_bytes,
            metrics,
            processed,
            Pseudonyms.of(settings.pseudonym_key),
        )
        try:
            if not isinstance(stream, faust.Stream):  # take_events is not on the StreamT protocol
                raise TypeError(f"expected a faust.Stream, got {type(stream).__name__}")
            async for events in stream.take_events(
                settings.batch_size, within=settings.batch_wait_ms / 1000
            ):
                if (now := await watch.current()) != name:
                    log.info("writing to namespace %r (was %r)", now, name)
                    processor.retarget(*_sinks(watch.settings_of(now), client))
                    name = now
                await processor.process(events)
        finally:
            await client.aclose()

    async def measure_lag() -> None:
        metrics.lag.set(processed.lag(app.consumer))

    app.timer(5.0)(measure_lag)

    return app
