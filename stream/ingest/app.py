"""The Faust ingest app: one task that applies the consumer's batches of the ingest topics
with an `IngestProcessor` and follows the serving namespace."""

from __future__ import annotations

import asyncio
import logging

import faust
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from store.interaction_store import RedisInteractionStore
from stream.config import Settings
from stream.events.event_time import EventTimeLimits
from stream.events.pseudonyms import Pseudonyms
from stream.events.topics import TopicNames
from stream.ingest.batches import BatchChannel
from stream.ingest.metrics import WorkerMetrics
from stream.ingest.positions import AppliedPositions
from stream.ingest.processor import IngestProcessor, Prepared, ProcessedOffsets
from stream.ingest.transport import LowLatencyApp
from stream.user_vectors import UserVectorWriter
from stream.wiring import NamespaceWatch, namespace_state, redis_client

log = logging.getLogger(__name__)
# Event-loop turns redis-py takes to send a command (pool checkout, connection check, write):
# given to a batch's apply before the next batch decodes, so decoding overlaps the script
# running in Redis (one worker draining a backlog: ~20k -> ~24.5k events/s). Too few turns
# costs only the overlap.
SEND_TURNS = 8


def _sinks(
    settings: Settings, client: aioredis.Redis
) -> tuple[RedisInteractionStore, UserVectorWriter]:
    """Where a namespace's ingest effects and user vectors go."""
    state = namespace_state(settings, client)
    writer = UserVectorWriter(state.interactions, state.vectors, state.models, settings.embed_batch)
    return state.interactions, writer


def _broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def create_worker_app(settings: Settings, metrics: WorkerMetrics | None = None) -> faust.App:
    """The Faust app with the ingest agent, configured from `settings`."""
    session_timeout = settings.session_timeout_s
    datadir = settings.data_dir / "worker" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    names = TopicNames.from_settings(settings)
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
    positions = AppliedPositions()
    positions.on_rewind(app.rejoin_group)
    app.resume_offsets = positions.resume_offsets
    batches = app.batches = BatchChannel(names.ingest, settings.batch_size, app.flow_control)
    app.topics.add(app.topic(*names.ingest, key_type=bytes, value_type=bytes))
    dlq_topic = app.topic(names.dlq, key_type=bytes, value_type=bytes)

    client = redis_client(settings)
    watch = NamespaceWatch(settings, client)
    processor: IngestProcessor | None = None

    async def prepare() -> None:
        """The processor, writing to the serving namespace: before any assignment, whose
        seek asks it where Redis's effects reach."""
        nonlocal processor
        processor = IngestProcessor(
            *_sinks(watch.settings_of(await watch.current()), client),
            dlq_topic,
            settings.max_event_bytes,
            metrics,
            processed,
            Pseudonyms.of(settings.pseudonym_key),
            EventTimeLimits.of(settings),
            positions,
        )

    async def ingest() -> None:
        """Apply each batch the consumer fetched, in order, then ack its messages (Faust
        commits acked offsets); the next batch decodes while one is applied. Batches of an
        earlier assignment are left to be read again."""
        if processor is None:
            raise RuntimeError("the ingest processor was not prepared")
        name = await watch.current()
        applying: asyncio.Future[None] | None = None
        embedding = asyncio.ensure_future(processor.embed_users())

        async def apply(prepared: Prepared | None) -> None:
            if await processor.apply(prepared) and prepared is not None:
                for message in prepared.messages:
                    app.consumer.ack(message)

        try:
            while True:
                messages = await batches.get()
                if messages[0].generation_id != app.consumer_generation_id:
                    continue
                prepared = await processor.prepare(messages)
                if applying is not None:
                    await applying
                if (now := await watch.current()) != name:
                    log.info("writing to namespace %r (was %r)", now, name)
                    processor.retarget(*_sinks(watch.settings_of(now), client))
                    name = now
                applying = asyncio.ensure_future(apply(prepared))
                for _ in range(SEND_TURNS):  # the script is sent before the next batch decodes
                    await asyncio.sleep(0)
        finally:
            embedding.cancel()
            if applying is not None:
                applying.cancel()
            await client.aclose()

    app.before_consuming(prepare)
    app.task(ingest)

    async def measure_lag() -> None:
        metrics.lag.set(processed.lag(app.consumer))

    app.timer(5.0)(measure_lag)

    async def check_positions() -> None:
        try:
            await positions.check()
        except (RedisError, OSError) as error:  # Redis away: batches wait it out; check again
            log.debug("cannot compare applied offsets now: %s", error)

    app.timer(1.0)(check_positions)

    return app
