"""Keep a replica's in-process index and item catalog current from Redis and its change feed."""

from __future__ import annotations

import asyncio
import logging

from store.faiss_index import FaissVectorIndex
from store.vector_state import FeedEntry, ItemMeta, RedisVectorState

log = logging.getLogger(__name__)


class IndexFollower:
    """Builds the index from Redis at start, then applies feed entries as they arrive.

    The feed position is read before the bulk load, so a change made during the load is
    applied again afterwards (upserts and deletes are idempotent): nothing is missed.
    """

    def __init__(
        self, state: RedisVectorState, index: FaissVectorIndex, catalog: dict[str, ItemMeta]
    ) -> None:
        self.state = state
        self.index = index
        self.catalog = catalog
        self.position = "0-0"
        self.ready = asyncio.Event()

    async def rebuild(self) -> int:
        """Load every item vector and metadata; returns how many vectors were loaded."""
        self.position = await self.state.feed_position()
        loaded = 0
        async for ids, vectors in self.state.all_item_vectors():
            await asyncio.to_thread(self.index.upsert, ids, vectors)
            loaded += len(ids)
        self.catalog.clear()
        self.catalog.update(await self.state.item_meta())
        self.ready.set()
        return loaded

    async def apply(self, entry: FeedEntry) -> None:
        """Apply one change: re-read the named items from Redis (the feed carries only ids)."""
        if entry.op == "delete":
            await asyncio.to_thread(self.index.remove, entry.item_ids)
            for item_id in entry.item_ids:
                self.catalog.pop(item_id, None)
        elif entry.op == "upsert":
            ids, vectors = await self.state.item_vectors(entry.item_ids)
            if ids:
                await asyncio.to_thread(self.index.upsert, ids, vectors)
        else:
            self.catalog.update(await self.state.item_meta(entry.item_ids))
        self.position = entry.entry_id

    async def run(self, block_ms: int = 1_000) -> None:
        """Rebuild (retrying while Redis is away), then follow the feed, until cancelled."""
        while True:
            _raise_if_cancelling()
            try:
                loaded = await self.rebuild()
                log.info("index built from Redis: %d items", loaded)
                break
            except Exception:
                _unless_cancelled("index build failed")
                await asyncio.sleep(1.0)
        await self.follow(block_ms)

    async def follow(self, block_ms: int = 1_000) -> None:
        """Apply feed entries until cancelled; a Redis error is logged and retried."""
        while True:
            _raise_if_cancelling()
            try:
                for entry in await self.state.read_feed(self.position, block_ms=block_ms):
                    await self.apply(entry)
            except Exception:
                _unless_cancelled("item feed: read failed")
                await asyncio.sleep(1.0)


def _raise_if_cancelling() -> None:
    """redis-py can absorb a cancellation that lands during a read (it may surface as
    ConnectionError, or not at all): a retry loop must check for it, or it never stops."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _unless_cancelled(what: str) -> None:
    """Log a failure to retry it, unless the task is being cancelled (then stop)."""
    _raise_if_cancelling()
    log.exception("%s, retrying in 1 s", what)
