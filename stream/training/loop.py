"""`recstream trainer`: the one trainer of a model. It reads every partition itself (no
consumer group) from the offsets in its last checkpoint, learns in micro-batches, and every
`publish_interval_s` or `publish_events` publishes a model version: so after a crash it
resumes exactly where the model it restores stopped learning."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from functools import partial

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from model.checkpoints import CheckpointError, CheckpointStore
from model.device import choose_device
from model.trainer import OnlineTrainer, TrainerConfig
from model.two_tower import ITEM_FEATURE_FIELDS, TwoTowerConfig, TwoTowerRecommender
from model.vocabulary import IdVocabulary
from store.vector_state import FencedOffError
from stream.config import Settings
from stream.events.event_time import EventTimeLimits
from stream.events.handlers import (
    Outcome,
    SourcePosition,
    decode_record,
    in_event_order,
    partition_key,
)
from stream.events.pseudonyms import Pseudonyms
from stream.events.topics import TopicNames, ensure_topics
from stream.startup import serve_metrics, start_process, stop_on_signals
from stream.training.item_metadata import ItemMetadataFollower
from stream.training.learner import StreamLearner
from stream.training.lease import TrainerLease
from stream.training.metrics import TrainerMetrics
from stream.training.publisher import ModelPublisher
from stream.training.tower_index import trainer_tower_views
from stream.wiring import (
    NamespaceWatch,
    checkpoint_store,
    redis_client,
    redis_keys,
    retrying,
    vector_state,
)

log = logging.getLogger(__name__)
_DESCRIBE_EVERY_S = 1.0  # how often the trainer reads item metadata changes before a step
_ROLLBACK_EVERY_S = 0.5  # how often it looks for a rollback request


def load_or_create(settings: Settings, checkpoints: CheckpointStore) -> tuple[StreamLearner, int]:
    """The learner from the CURRENT checkpoint (and its version), or a fresh one (version 0)."""
    device = choose_device(settings.trainer_device)
    if checkpoints.current() is not None:
        checkpoint = checkpoints.load(device=device)
        learner = _learner(settings, checkpoint.trainer)
        learner.restore(checkpoint.extra, checkpoint.position, checkpoint.ranking)
        configure_items(settings, checkpoint.trainer.model.vocabulary)
        log.info(
            "resuming from checkpoint %d: %d events learned, position %s",
            checkpoint.version,
            learner.events_learned,
            checkpoint.position,
        )
        return learner, checkpoint.version
    return fresh_learner(settings, seed=0), 0


def configure_items(settings: Settings, vocabulary: IdVocabulary) -> None:
    """The item vocabulary's admission threshold and expiry, from the settings (they apply
    to a resumed model too, whatever it was saved with)."""
    expire_ms = int(settings.item_expire_s * 1000) or None
    vocabulary.configure(admit_after=settings.item_admit_after, expire_after_ms=expire_ms)


def fresh_learner(settings: Settings, seed: int) -> StreamLearner:
    """An untrained model whose every random draw follows from `seed`."""
    shape = TwoTowerConfig(dim=settings.vector_dim, feature_fields=ITEM_FEATURE_FIELDS)
    vocabulary = IdVocabulary()
    configure_items(settings, vocabulary)
    model = TwoTowerRecommender(shape, vocabulary, seed=seed)
    config = TrainerConfig(seed=seed)
    return _learner(settings, OnlineTrainer(model, config, choose_device(settings.trainer_device)))


def _learner(settings: Settings, trainer: OnlineTrainer) -> StreamLearner:
    """The stream learner of `trainer` as the settings say (dedup window, users kept, how the
    ranker's training finds the tower's candidates)."""
    return StreamLearner(
        trainer,
        settings.trainer_dedup_window,
        settings.trainer_max_users,
        tower_side=trainer_tower_views(settings),
    )


async def _assign(
    consumer: AIOKafkaConsumer, topics: tuple[str, ...], learner: StreamLearner
) -> list[TopicPartition]:
    await consumer.topics()
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(partitions)
    for tp in partitions:
        offset = learner.position.get(partition_key(tp.topic, tp.partition))
        if offset is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)
    return partitions


async def train(
    settings: Settings, stop: asyncio.Event, metrics: TrainerMetrics | None = None
) -> StreamLearner:
    """Learn and publish the namespace of `settings` until `stop` is set; a final version is
    published on the way out. Only while holding the model's trainer lease: a second trainer
    waits here (and says so) until the first one stops or its lease expires."""
    ensure_topics(settings)
    checkpoints = checkpoint_store(settings)
    client = redis_client(settings)
    lease = TrainerLease(client, redis_keys(settings).control, settings.trainer_lease_s)
    try:
        if not await lease.acquire(stop):
            return (await asyncio.to_thread(load_or_create, settings, checkpoints))[0]
        rolled_back: int | None = None
        while True:  # again from a version `recstream model rollback` asked for
            async with lease.kept():
                learner, rolled_back = await _train_holding(
                    settings, stop, metrics, checkpoints, client, lease, rolled_back
                )
            if rolled_back is None:
                return learner
    finally:
        await lease.release()
        await client.aclose()


async def _train_holding(
    settings: Settings,
    stop: asyncio.Event,
    metrics: TrainerMetrics | None,
    checkpoints: CheckpointStore,
    client: aioredis.Redis,
    lease: TrainerLease,
    rolled_back: int | None,
) -> tuple[StreamLearner, int | None]:
    """Train from the CURRENT checkpoint until `stop`, a lost lease (learner, None), or a
    rollback request (learner, the version to go back to; CURRENT points at it). After a
    rollback to `rolled_back`, its state is published at once as a new version. The lease
    is kept alive by the caller (`TrainerLease.kept`); this checks that it still holds."""
    learner, version = await asyncio.to_thread(load_or_create, settings, checkpoints)
    metrics = metrics or TrainerMetrics.create()
    state = vector_state(settings, client)
    publisher = ModelPublisher(state, checkpoints, lambda: lease.fence)
    asked_at = time.monotonic()
    metadata = ItemMetadataFollower(state, learner)
    described_at = float("-inf")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.app_id}-trainer",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=max(settings.fetch_max_wait_ms, settings.train_wait_ms // 2),
    )
    pseudonyms = Pseudonyms.of(settings.pseudonym_key)
    limits = EventTimeLimits.of(settings)  # the workers' rule: they dead-letter these
    await consumer.start()
    try:
        if rolled_back is not None:
            note = {"rolled_back_from": rolled_back}
            republished = await publisher.publish(learner, _now_ms(), 0.0, note, full=True)
            log.warning("version %d serves version %d's model", republished.version, rolled_back)
            version = republished.version
            metrics.model_version.set(version)
        elif version:
            version = await publisher.resume(learner, version)
            metrics.model_version.set(version)
        partitions = await _assign(consumer, TopicNames.from_settings(settings).ingest, learner)
        pending = 0
        loss = 0.0
        learned_ms = 0
        last_publish = time.monotonic()
        gathered: list[tuple[SourcePosition, Outcome]] = []
        since = time.monotonic()
        while not stop.is_set():
            if not lease.held:
                return learner, None  # another trainer holds the model now: publish nothing
            if time.monotonic() - asked_at >= _ROLLBACK_EVERY_S:
                asked_at = time.monotonic()
                wanted = await retrying(partial(_rollback_request, client, settings, checkpoints))
                if wanted is not None:
                    return learner, wanted
            records = await consumer.getmany(timeout_ms=50, max_records=settings.train_batch)
            if not gathered:
                since = time.monotonic()
            gathered += [
                decode_record(
                    record,
                    settings.max_event_bytes,
                    pseudonyms,
                    arrival_ms=record.timestamp,
                    limits=limits,
                )
                for records_of_partition in records.values()
                for record in records_of_partition
            ]
            waited_ms = (time.monotonic() - since) * 1000
            if gathered and (
                len(gathered) >= settings.train_step_events or waited_ms >= settings.train_wait_ms
            ):
                if time.monotonic() - described_at >= _DESCRIBE_EVERY_S:
                    await retrying(metadata.refresh)
                    described_at = time.monotonic()
                batch, gathered = list(in_event_order(gathered)), []
                learned = await asyncio.to_thread(learner.learn, batch)
                pending += learned.events
                metrics.events.inc(learned.events)
                metrics.duplicates.inc(learned.duplicates)
                metrics.skipped.inc(learned.skipped)
                if learned.report is not None:
                    loss = learned.report.loss
                    learned_ms = int(time.time() * 1000)
                    metrics.loss.set(loss)
            due = time.monotonic() - last_publish >= settings.publish_interval_s
            if due and not pending and version:
                last_publish = time.monotonic()
                if await retrying(state.model_version) is None:
                    log.warning("Redis holds no model version: publishing %d again", version)
                    await publisher.resume(learner, version)
            if pending and (pending >= settings.publish_events or due):
                last_publish = time.monotonic()
                if not await retrying(lease.renew):  # before the checkpoint is written
                    return learner, None
                published = await _publish(publisher, learner, learned_ms, loss, metrics)
                if published is None:
                    continue
                version, pending = published, 0
                ends = await consumer.end_offsets(partitions)
                metrics.lag.set(
                    sum(
                        max(0, end - learner.position.get(partition_key(tp.topic, tp.partition), 0))
                        for tp, end in ends.items()
                    )
                )
        unsaved = version and checkpoints.current() != version  # no full state on disk yet
        if (pending or unsaved) and await retrying(lease.renew):  # a restart resumes exactly
            await _publish(publisher, learner, learned_ms, loss, metrics, full=True)
        return learner, None
    except FencedOffError as error:
        log.error("model version not published: %s; another trainer publishes now", error)
        return learner, None
    finally:
        await consumer.stop()


async def _rollback_request(
    client: aioredis.Redis, settings: Settings, checkpoints: CheckpointStore
) -> int | None:
    """The version `recstream model rollback` asked for, with CURRENT pointed at it (None:
    no request, or one for a version no longer on disk, which is dropped with an error)."""
    key = redis_keys(settings).control.trainer_rollback
    raw = await client.getdel(key)
    if raw is None:
        return None
    try:
        wanted = int(raw)
        checkpoints.rollback(wanted)
    except (ValueError, CheckpointError) as error:
        log.error("rollback to %r refused: %s", raw, error)
        return None
    log.warning("rollback requested: resuming from version %d", wanted)
    return wanted


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _publish(
    publisher: ModelPublisher,
    learner: StreamLearner,
    learned_ms: int,
    loss: float,
    metrics: TrainerMetrics,
    *,
    full: bool = False,
) -> int | None:
    """Publish a version (`full`: with the trainer's full state, whether due or not); None
    when it could not be written (the last one stays, and what was learned since is
    published with the next one)."""
    try:
        published = await publisher.publish(learner, learned_ms, loss, full=full)
    except CheckpointError as error:
        log.error("model version not published: %s; retrying at the next interval", error)
        metrics.save_failures.inc()
        return None
    log.info(
        "published model version %d: %d item vectors changed, %d events learned",
        published.version,
        published.changed,
        learner.events_learned,
    )
    metrics.model_version.set(published.version)
    metrics.publish.observe(published.seconds)
    return published.version


async def _until_moved(
    watch: NamespaceWatch, name: str, stop: asyncio.Event, moved: asyncio.Event
) -> None:
    """Set `moved` when the process stops or another namespace starts serving."""
    while not stop.is_set() and await watch.current() == name:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), watch.every_s)
    moved.set()


def start_trainer_process(settings: Settings) -> None:
    """`start_process` for the trainer, with what its first optimiser step would import
    (torch._dynamo: ~800 modules, sympy among them, ~118k objects) imported first, so that it
    too is frozen out of garbage collections. Imported at the step, full collections
    traversed it every few seconds: up to 227 ms each in the soak."""
    import torch._dynamo  # noqa: F401

    start_process(settings, nice=settings.trainer_nice)


def run_trainer(settings: Settings) -> None:
    """Run the trainer until SIGTERM/SIGINT, at `trainer_nice` CPU priority."""
    start_trainer_process(settings)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        metrics = TrainerMetrics.create()
        serve_metrics(metrics.registry, settings.trainer_metrics_port)
        client = redis_client(settings)
        watch = NamespaceWatch(settings, client)
        try:
            while not stop.is_set():
                name = await watch.current()
                moved = asyncio.Event()
                watching = asyncio.create_task(_until_moved(watch, name, stop, moved))
                log.info("training namespace %r", name)
                await train(watch.settings_of(name), moved, metrics)
                watching.cancel()  # train also returns when another trainer took the lease
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
        finally:
            await client.aclose()

    asyncio.run(main())
