"""`recstream rebuild --into NAME`: build the whole serving state of namespace NAME from the
log (histories and counters, a model trained from a fixed seed, item vectors, user vectors)
while the serving namespace keeps serving; `recstream promote` then switches to it. The log is
read once, applied to Redis as it comes and spooled to disk for training in event-time order,
so memory holds a read buffer, not the log."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from itertools import islice

import redis.asyncio as aioredis
from tqdm import tqdm

from store.interaction_store import RedisInteractionStore
from store.namespaces import NamespaceRegistry
from stream.config import Settings
from stream.events.handlers import DeadLetter, Decoded
from stream.ops.event_spool import EventSpool
from stream.ops.replay_kafka import RangeReader
from stream.training.learner import StreamLearner
from stream.training.loop import fresh_learner
from stream.training.publisher import ModelPublisher
from stream.user_vectors import UserVectorWriter
from stream.wiring import (
    checkpoint_store,
    delete_namespace_keys,
    interaction_store,
    namespace_registry,
    redis_client,
    redis_keys,
    serving_models,
    vector_state,
)


@dataclass(frozen=True, slots=True)
class RebuildSummary:
    """What a rebuild made, and how long each phase took."""

    name: str
    events: int
    duplicates: int
    invalid: int
    users: int
    items: int
    model_version: int
    read_s: float
    train_s: float
    publish_s: float
    complete_ms: int

    def render(self) -> str:
        total = self.read_s + self.train_s + self.publish_s
        return (
            f"namespace {self.name!r}: {self.events:,} events learned ({self.duplicates:,} "
            f"duplicates, {self.invalid:,} invalid skipped), {self.users:,} users, "
            f"{self.items:,} items, model version {self.model_version}\n"
            f"read and apply {self.read_s:.1f}s, train {self.train_s:.1f}s, publish and "
            f"embed users {self.publish_s:.1f}s: {total:.1f}s in all"
        )


async def _apply(store: RedisInteractionStore, batch: Decoded) -> None:
    effects = [outcome for _, outcome in batch if not isinstance(outcome, DeadLetter)]
    if effects:
        await store.apply_many(effects)


async def _prepare(
    settings: Settings, client: aioredis.Redis, name: str, force: bool
) -> NamespaceRegistry:
    registry = namespace_registry(settings, client)
    if await registry.serving() == name:
        raise ValueError(f"namespace {name!r} is serving: rebuild into another name")
    if await registry.record(name) is not None and not force:
        raise ValueError(f"namespace {name!r} exists: pass --force to build it again")
    await registry.forget(name)
    return registry


def rebuild(
    settings: Settings,
    name: str,
    since_ms: int | None = None,
    *,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> RebuildSummary:
    """Build namespace `name` from every logged event since `since_ms` (default: all)."""
    if not name:
        raise ValueError("give the new namespace a name")
    shadow = settings.in_namespace(name)
    return asyncio.run(_rebuild(settings, shadow, since_ms, seed, force, progress))


async def _rebuild(
    settings: Settings,
    shadow: Settings,
    since_ms: int | None,
    seed: int,
    force: bool,
    progress: bool,
) -> RebuildSummary:
    client = redis_client(settings)
    try:
        registry = await _prepare(settings, client, shadow.namespace, force)
        await asyncio.to_thread(delete_namespace_keys, shadow)
        shutil.rmtree(shadow.checkpoint_dir, ignore_errors=True)
        store = interaction_store(shadow, client)
        serving = redis_keys(settings.in_namespace(await registry.serving()))
        # item metadata is not in the log; an item's shard is the same in every namespace
        shards = zip(serving.every_shard(), redis_keys(shadow).every_shard(), strict=True)
        for source, target in shards:
            catalogue = await client.hgetall(source.item_meta)
            if catalogue:
                pairs = [x for pair in catalogue.items() for x in pair]
                await client.hset(target.item_meta, items=pairs)
        complete_ms = int(time.time() * 1000)
        began = time.perf_counter()
        reader = RangeReader(shadow, since_ms)
        with EventSpool(shadow.data_dir / "rebuild") as spool:
            for batch in reader.batches(progress=progress, desc=f"read into {shadow.namespace}"):
                spool.extend(batch)
                await _apply(store, batch)
            read_s = time.perf_counter() - began

            began = time.perf_counter()
            learner = fresh_learner(shadow, seed)
            step = shadow.train_step_events
            loss = 0.0
            with tqdm(
                total=spool.records, desc="train", unit="ev", disable=not progress, file=sys.stderr
            ) as bar:
                ordered = spool.in_event_order()
                while chunk := list(islice(ordered, step)):
                    learned = await asyncio.to_thread(learner.learn, chunk)
                    loss = learned.report.loss if learned.report is not None else loss
                    bar.update(len(chunk))
        learner.position = dict(reader.position)
        train_s = time.perf_counter() - began

        began = time.perf_counter()
        version, items = await _publish(shadow, client, store, learner, loss)
        publish_s = time.perf_counter() - began
        summary = RebuildSummary(
            name=shadow.namespace,
            events=learner.events_learned,
            duplicates=learner.duplicates,
            invalid=learner.invalid,
            users=len(learner.users),
            items=items,
            model_version=version,
            read_s=read_s,
            train_s=train_s,
            publish_s=publish_s,
            complete_ms=complete_ms,
        )
        await registry.register(
            shadow.namespace, {**asdict(summary), "built_ms": int(time.time() * 1000)}
        )
        return summary
    finally:
        await client.aclose()


async def _publish(
    shadow: Settings,
    client: aioredis.Redis,
    store: RedisInteractionStore,
    learner: StreamLearner,
    loss: float,
) -> tuple[int, int]:
    """The shadow's first model version, then every user's vector under it."""
    checkpoints = checkpoint_store(shadow)
    state = vector_state(shadow, client)
    published = await ModelPublisher(state, checkpoints).publish(
        learner, int(time.time() * 1000), loss
    )
    writer = UserVectorWriter(store, state, serving_models(shadow), shadow.embed_batch)
    users = sorted(learner.users)
    for start in range(0, len(users), 4096):
        await writer.refresh(users[start : start + 4096])
    return published.version, published.changed
