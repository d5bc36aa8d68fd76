"""`recstream rebuild --into NAME`: build the whole serving state of namespace NAME from the
log (histories and counters, a model trained from a fixed seed, item vectors, user vectors)
while the serving namespace keeps serving; `promote` and `rollback` switch between them."""

from __future__ import annotations

import asyncio
import heapq
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

import redis
import redis.asyncio as aioredis
from tqdm import tqdm

from model.checkpoints import CheckpointStore
from model.serving_models import ServingModels
from store.interaction_store import RedisInteractionStore
from store.namespaces import NamespaceRegistry, Switch
from store.redis_keys import RedisKeys, delete_prefixed
from stream.config import Settings
from stream.handlers import DeadLetter, SourcePosition
from stream.kafka_replay import Decoded, RangeReader, replay_kafka
from stream.learner import Outcome, StreamLearner
from stream.publisher import ModelPublisher
from stream.stores import interaction_store, vector_state
from stream.trainer_process import fresh_learner
from stream.user_vectors import UserVectorWriter

CATCH_UP_MARGIN_MS = 60_000  # clock skew between the producers' and this machine's clocks
FOLLOW_S = 3.0  # how long processes take to notice a switch (they look every 0.5 s)


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


def _in_event_order(partitions: dict[str, Decoded]) -> Iterator[tuple[SourcePosition, Outcome]]:
    """Every partition's messages merged by (event time, event id), each partition's own
    order kept: the same log gives the same sequence however the reads interleaved."""

    def key(item: tuple[SourcePosition, Outcome]) -> tuple[int, str]:
        outcome = item[1]
        if isinstance(outcome, DeadLetter) or not outcome.interactions:
            return (0, "")
        return (outcome.interactions[0].ts_ms, outcome.event_id)

    return heapq.merge(*(partitions[p] for p in sorted(partitions)), key=key)


async def _apply(store: RedisInteractionStore, batch: Decoded) -> None:
    effects = [outcome for _, outcome in batch if not isinstance(outcome, DeadLetter)]
    if effects:
        await store.apply_many(effects)


async def _prepare(
    settings: Settings, client: aioredis.Redis, name: str, force: bool
) -> NamespaceRegistry:
    registry = NamespaceRegistry(client, settings.redis_prefix)
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
    client = aioredis.from_url(settings.redis_url)
    try:
        registry = await _prepare(settings, client, shadow.namespace, force)
        await asyncio.to_thread(delete_prefixed_sync, shadow)
        shutil.rmtree(shadow.checkpoint_dir, ignore_errors=True)
        keys = RedisKeys(shadow.keys_prefix)
        store = interaction_store(shadow, client)
        serving = RedisKeys(settings.in_namespace(await registry.serving()).keys_prefix)
        catalogue = await client.hgetall(serving.item_meta)  # item metadata is not in the log
        if catalogue:
            await client.hset(keys.item_meta, items=[x for pair in catalogue.items() for x in pair])
        complete_ms = int(time.time() * 1000)
        began = time.perf_counter()
        reader = RangeReader(shadow, since_ms)
        partitions: dict[str, Decoded] = {}
        for batch in reader.batches(progress=progress, desc=f"read into {shadow.namespace}"):
            for source, outcome in batch:
                partitions.setdefault(f"{source.topic}/{source.partition}", []).append(
                    (source, outcome)
                )
            await _apply(store, batch)
        read_s = time.perf_counter() - began

        began = time.perf_counter()
        learner = fresh_learner(shadow, seed)
        total = sum(len(p) for p in partitions.values())
        step = shadow.train_step_events
        loss = 0.0
        with tqdm(
            total=total, desc="train", unit="ev", disable=not progress, file=sys.stderr
        ) as bar:
            ordered = _in_event_order(partitions)
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
    checkpoints = CheckpointStore(shadow.checkpoint_dir, keep=shadow.checkpoint_keep)
    state = vector_state(shadow, client)
    published = await ModelPublisher(state, checkpoints).publish(
        learner, int(time.time() * 1000), loss
    )
    writer = UserVectorWriter(store, state, ServingModels(checkpoints), shadow.embed_batch)
    users = sorted(learner.users)
    for start in range(0, len(users), 4096):
        await writer.refresh(users[start : start + 4096])
    return published.version, published.changed


def delete_prefixed_sync(settings: Settings) -> int:
    """Delete a namespace's Redis keys (a blocking client: SCAN over many keys)."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return delete_prefixed(client, settings.keys_prefix)
    finally:
        client.close()


def switch(settings: Settings, name: str | None, *, progress: bool = True) -> Switch:
    """Promote `name` (None: roll back), then bring the namespace now serving up to date
    with what the log received since it last was complete (idempotent, so overlap is free)."""
    done = asyncio.run(_switch(settings, name))
    if done.changed:
        time.sleep(FOLLOW_S)  # let workers move to the new namespace before catching up
        record = asyncio.run(_record(settings, done.after)) or {}
        since = int(record.get("complete_ms", 0)) - CATCH_UP_MARGIN_MS
        replay_kafka(settings.in_namespace(done.after), max(since, 0), progress=progress)
    return done


async def _switch(settings: Settings, name: str | None) -> Switch:
    client = aioredis.from_url(settings.redis_url)
    try:
        registry = NamespaceRegistry(client, settings.redis_prefix)
        return await (registry.rollback() if name is None else registry.promote(name))
    finally:
        await client.aclose()


async def _record(settings: Settings, name: str) -> dict[str, Any] | None:
    client = aioredis.from_url(settings.redis_url)
    try:
        return await NamespaceRegistry(client, settings.redis_prefix).record(name)
    finally:
        await client.aclose()
