"""The Faust ingest app: one thin agent that batches the ingest topics into an
`IngestProcessor` and follows the serving namespace."""

from __future__ import annotations

import logging

import faust
import redis.asyncio as aioredis
from faust.types import StreamT
from redis.exceptions import RedisError

from store.interaction_store import RedisInteractionStore
from stream.config import Settings
from stream.events.event_time import EventTimeLimits
from stream.events.pseudonyms import Pseudonyms
from stream.events.topics import TopicNames
from stream.ingest.metrics import WorkerMetrics
from stream.ingest.positions import AppliedPositions
from stream.ingest.processor import IngestProcessor, ProcessedOffsets
from stream.ingest.transport import LowLatencyApp
from stream.user_vectors import UserVectorWriter
from stream.wiring import NamespaceWatch, namespace_state, redis_client

log = logging.getLogger(__name__)


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
    names = TopicNames.from_settings(settings)
    ingest_topic = app.topic(*names.ingest, key_type=bytes, value_type=bytes)
    dlq_topic = app.topic(names.dlq, key_type=bytes, value_type=bytes)

    @app.agent(ingest_topic, name="ingest")
    async def ingest(stream: StreamT[bytes]) -> None:
        client = redis_client(settings)
        watch = NamespaceWatch(settings, client)
        name = await watch.current()
        processor = IngestProcessor(
            *_sinks(watch.settings_of(name), client),
            dlq_topic,
            settings.max_event_bytes,
            metrics,
            processed,
            Pseudonyms.of(settings.pseudonym_key),
            EventTimeLimits.of(settings),
            positions,
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

    async def check_positions() -> None:
        try:
            await positions.check()
        except (RedisError, OSError) as error:  # Redis away: batches wait it out; check again
            log.debug("cannot compare applied offsets now: %s", error)

    app.timer(1.0)(check_positions)

    return app
