"""The retrieval side of an API replica: Redis state, the in-process index, the feed follower."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from fastapi import Request
from redis.exceptions import RedisError

from model.serving_models import ServingModels
from store.faiss_index import FaissVectorIndex
from store.index_snapshots import IndexSnapshots
from store.index_sync import IndexFollower
from store.interaction_store import RedisInteractionStore
from store.item_catalog import ItemCatalog
from store.prepared_users import PreparedUsers
from store.retrieval import Retriever
from store.shared_index import SharedFlatIndex
from store.vector_index import VectorIndex
from store.vector_state import RedisVectorState
from stream.config import Settings
from stream.user_vectors import ModelUserEncoder, UserVectorPreparer
from stream.wiring import NamespaceWatch, namespace_state, redis_client, vector_state

log = logging.getLogger(__name__)
_SHUTDOWN_S = 5.0  # the follower stops within one feed poll (1 s); never wait forever
_DRAIN_S = 5.0  # requests begun on a namespace's state finish before it closes
_LOAD_S = 600.0  # longest a replica waits for a promoted namespace's index to load
_PREPARE_BATCH = 64  # users per history read and model call: requests are served between


@dataclass
class Serving:
    """Everything the retrieval endpoints need, opened with the app and closed with it."""

    client: aioredis.Redis
    state: RedisVectorState
    index: VectorIndex
    follower: IndexFollower
    retriever: Retriever
    models: ServingModels
    namespace: str
    prepared: PreparedUsers
    interactions: RedisInteractionStore

    @property
    def ready(self) -> bool:
        return self.follower.ready.is_set()


def serving_of(request: Request) -> Serving:
    serving: Serving = request.app.state.serving
    return serving


@contextlib.asynccontextmanager
async def open_serving(settings: Settings) -> AsyncIterator[Serving]:
    """Connect to Redis, start building the index in the background, stop on exit."""
    client = redis_client(settings, timeout_s=settings.redis_timeout_s)
    feed_client = redis_client(settings)  # blocking feed reads outlast the timeout
    opened = namespace_state(settings, client)
    state, interactions, models = opened.vectors, opened.interactions, opened.models
    index: VectorIndex
    if settings.shares_index:
        index = SharedFlatIndex(settings.vector_dim, search_threads=1)
    else:
        index = FaissVectorIndex(
            settings.vector_dim,
            settings.index_factory,
            search_threads=1,
            nprobe=settings.index_nprobe,
            ef_search=settings.index_ef_search,
        )
    catalog = ItemCatalog()

    prepared = PreparedUsers(settings.prepare_users, settings.prepare_window_s)
    preparer = UserVectorPreparer(interactions, models, prepared, _PREPARE_BATCH)

    async def load_model(version: int) -> None:
        """Have the model of a version in memory, and the vectors of the users served lately
        made with it, before the index switches to it: the old version serves meanwhile."""
        if await asyncio.to_thread(models.get, version) is None:
            log.warning("model version %d not loadable: users are not re-embedded for it", version)
            return
        if settings.prepare_users:
            try:
                await preparer.prepare(version)
            except RedisError as error:  # the fallback embeds them on request instead
                log.warning("cannot prepare users for version %d: %s", version, error)
            except Exception:  # never a reason not to serve the version
                log.exception("preparing users for version %d failed", version)

    feed = vector_state(settings, feed_client)
    keeps_snapshots = settings.index_snapshot_s or settings.shares_index
    snapshots = IndexSnapshots(settings.index_snapshot_dir) if keeps_snapshots else None
    follower = IndexFollower(
        feed,
        index,
        catalog,
        before_version=load_model,
        snapshots=snapshots,
        snapshot_every_s=settings.index_snapshot_s,
    )
    encoder = ModelUserEncoder(models)
    retriever = Retriever(
        index,
        catalog,
        state,
        interactions,
        encoder=encoder,
        prepared=prepared,
        rankings=models.ranking,
    )
    task = asyncio.create_task(follower.run())
    try:
        yield Serving(
            client,
            state,
            index,
            follower,
            retriever,
            models,
            settings.namespace,
            prepared,
            interactions,
        )
    finally:
        follower.stop()
        task.cancel()
        await asyncio.wait([task], timeout=_SHUTDOWN_S)
        for each in (client, feed_client):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(each.aclose(), _SHUTDOWN_S)


@contextlib.asynccontextmanager
async def open_following(
    settings: Settings, install: Callable[[Serving], None]
) -> AsyncIterator[None]:
    """Serve the serving namespace; when `recstream promote` or `rollback` switches it, load
    the new one's index beside the old, `install` it once ready, then close the old one."""
    client = redis_client(settings)
    watch = NamespaceWatch(settings, client)
    name = await watch.current()
    stacks = [contextlib.AsyncExitStack()]
    install(await stacks[0].enter_async_context(open_serving(watch.settings_of(name))))

    async def follow() -> None:
        nonlocal name
        while True:
            await asyncio.sleep(watch.every_s)
            now = await watch.current()
            if now == name:
                continue
            stack = contextlib.AsyncExitStack()
            stacks.append(stack)
            try:
                serving = await stack.enter_async_context(open_serving(watch.settings_of(now)))
                await asyncio.wait_for(serving.follower.ready.wait(), _LOAD_S)
            except Exception:
                log.exception("cannot load namespace %r; still serving %r", now, name)
                stacks.remove(stack)
                await stack.aclose()
                continue
            install(serving)
            log.info("serving namespace %r (was %r)", now, name)
            name = now
            await asyncio.sleep(_DRAIN_S)
            await stacks.pop(0).aclose()

    task = asyncio.create_task(follow())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=_SHUTDOWN_S)
        for stack in stacks:
            await stack.aclose()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.aclose(), _SHUTDOWN_S)
