"""Keep a replica's in-process index and item catalog current from Redis and its change feed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from store.index_snapshots import IndexSnapshots
from store.item_catalog import ItemCatalog
from store.shared_index import SharedFlatIndex
from store.vector_index import VectorIndex, VectorIndexError
from store.vector_state import FeedEntry, RedisVectorState

log = logging.getLogger(__name__)
REBASE_SHARE = 0.1  # a shared index moves to a newer base once its delta holds this share
REBASE_MIN = 1_000  # ... or this many changes, whichever is more
REBASE_EVERY_S = 5.0  # and at most this often


def _stream_id(position: str) -> tuple[int, int]:
    """A Redis stream id ('ms-seq') as a tuple that orders as the stream does."""
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


VersionHook = Callable[[int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ServedVersion:
    """A model version this replica switched to, and when (wall-clock ms)."""

    version: int
    applied_ms: int
    learned_ms: int | None
    events_learned: int | None = None

    @property
    def publish_latency_ms(self) -> int | None:
        """From the end of the training step that made the version to serving it here."""
        return None if self.learned_ms is None else self.applied_ms - self.learned_ms


class IndexFollower:
    """Builds the index from Redis at start, then follows the change feed.

    Upserts are not applied one entry at a time: the follower collects the ids of every entry
    it has read, then reads their vectors in one transaction with the model version and the
    newest feed id. When that feed id is one it has read, the vectors are exactly the
    published state of that version, and they go into the index in one write stamped with
    it; otherwise it reads on first. So the index never holds vectors of two versions, and
    a change made during the bulk load is applied again afterwards (its feed entry comes
    after the position the load began at): nothing is missed.
    """

    def __init__(
        self,
        state: RedisVectorState,
        index: VectorIndex,
        catalog: ItemCatalog,
        before_version: VersionHook | None = None,
        snapshots: IndexSnapshots | None = None,
        snapshot_every_s: float = 300.0,
    ) -> None:
        """`snapshots`: where to start from (and save the index to every `snapshot_every_s`
        while following), instead of building the whole index from Redis at every start."""
        self.state = state
        self.index = index
        self.catalog = catalog
        self.position = "0-0"
        self.ready = asyncio.Event()
        self.served: ServedVersion | None = None
        self.on_served: Callable[[ServedVersion], None] | None = None
        self._before_version = before_version
        self._pending: set[str] = set()
        self._stopping = False
        self._snapshots = snapshots
        self._snapshot_every_s = snapshot_every_s
        self._saved_at = time.monotonic()
        self._base_position = "0-0"  # the feed position of a shared index's mapped base
        self._rebased_at = 0.0

    def stop(self) -> None:
        """Make `run`/`follow` return within one feed poll. Cancelling alone is not enough:
        redis-py's read timeouts can absorb a cancellation (`uncancel`), and a retry loop that
        missed it would keep its task, and the shutdown waiting for it, alive for ever."""
        self._stopping = True

    async def rebuild(self) -> int:
        """Load every item vector and metadata, dropping items Redis no longer has; returns
        how many vectors were loaded. Vectors changed while the scan ran are read again (in
        one transaction, by `settle`) from the feed entries since the scan began, not the
        whole catalogue: at 1M items that one read outlasts any timeout."""
        while True:
            self.position = await self.state.feed_position()
            loaded: set[str] = set()
            async for ids, vectors in self.state.all_item_vectors():
                await asyncio.to_thread(self.index.upsert, ids, vectors)
                loaded.update(ids)
            if await self.state.feed_kept_since(self.position):
                break
            log.warning("item feed trimmed while the index was read: reading it again")
        gone = [i for i in self.index.ids() if i not in loaded]
        if gone:
            await asyncio.to_thread(self.index.remove, gone)
        await self._complete()
        return len(loaded)

    async def _complete(self) -> None:
        """Finish a start (a build or a restore): every item's metadata and the deleted items
        (which leave the index), the feed since `position`, then ready to serve."""
        self.catalog.clear()
        self.catalog.update(await self.state.item_meta())
        self.catalog.deleted = await self.state.tombstones()
        await self._drop_deleted(self.index)
        await self.settle()
        self.ready.set()

    async def _drop_deleted(self, index: VectorIndex) -> None:
        """Remove from `index` the deleted items it holds (published before their deletion
        reached the trainer, or held by an older snapshot)."""
        stale = [i for i in self.catalog.deleted if index.contains(i)]
        if stale:
            await asyncio.to_thread(index.remove, stale)

    async def apply(self, entry: FeedEntry) -> None:
        """Take in one feed entry: deletes and metadata now, upserts at the next `settle`."""
        if entry.op == "delete":
            await asyncio.to_thread(self.index.remove, entry.item_ids)
            for item_id in entry.item_ids:
                self.catalog.delete(item_id)
            self._pending.difference_update(entry.item_ids)
        elif entry.op == "upsert":
            self._pending.update(entry.item_ids)
        else:
            self.catalog.update(await self.state.item_meta(entry.item_ids))
        self.position = entry.entry_id

    async def settle(self) -> None:
        """Bring the index to the newest published state (see the class docstring)."""
        while True:
            published = await self.state.published(sorted(self._pending))
            if published.feed_position != self.position:
                entries = await self.state.read_feed(self.position)
                if entries:
                    for entry in entries:
                        await self.apply(entry)
                    continue
            version = published.model_version
            changed = self.served is None or version != self.served.version
            if version is not None and changed and self._before_version is not None:
                await self._before_version(version)
            ids, vectors = published.ids, published.vectors
            if self.catalog.deleted & set(ids):  # deleted items are never indexed again
                keep = [n for n, i in enumerate(ids) if i not in self.catalog.deleted]
                ids, vectors = [ids[n] for n in keep], vectors[keep]
            await asyncio.to_thread(
                partial(self.index.upsert, ids, vectors, version, removing=published.missing)
            )
            self._pending.clear()
            if version is not None and changed:
                self.served = await self._served(version)
                if self.on_served is not None:
                    self.on_served(self.served)
            return

    async def _served(self, version: int) -> ServedVersion:
        info = await self.state.model_info(version)
        learned, events = info.get("learned_ms"), info.get("events_learned")
        return ServedVersion(
            version,
            int(time.time() * 1000),
            learned if isinstance(learned, int) else None,
            events if isinstance(events, int) else None,
        )

    async def run(self, block_ms: int = 1_000) -> None:
        """Start from the newest snapshot or else rebuild (retrying while Redis is away), then
        follow the feed, until cancelled."""
        while True:
            self._raise_if_stopping()
            try:
                async with self._building():
                    if await self.restore():
                        break
                    loaded = await self.rebuild()
                    log.info("index built from Redis: %d items", loaded)
                    await self._save_snapshot()  # the next start need not build it again
                    await self._rebase_if_due()  # a shared index maps what it just built
                    break
            except Exception:
                self._unless_stopping("index build failed")
                await asyncio.sleep(1.0)
        await self.follow(block_ms)

    def _building(self) -> contextlib.AbstractAsyncContextManager[None]:
        """One process of the host restores or builds at a time (see `IndexSnapshots`)."""
        if self._snapshots is None:
            return contextlib.nullcontext()
        return self._snapshots.building()

    async def restore(self) -> bool:
        """Load the newest snapshot and bring it to the newest published state by reading the
        feed on from the snapshot's position; False (nothing changed but the index, which a
        rebuild replaces) where there is none or the feed was trimmed past it."""
        if self._snapshots is None:
            return False
        began = time.monotonic()
        position = await asyncio.to_thread(self._snapshots.load, self.index)
        if position is None:
            return False
        if position == "0-0" or not await self.state.feed_kept_since(position):
            log.warning("item feed trimmed past the index snapshot's position: rebuilding")
            return False
        self.position = self._base_position = position
        await self._complete()
        log.info(
            "index restored from its snapshot (%d items) and the feed since, in %.1f s",
            self.index.size,
            time.monotonic() - began,
        )
        return True

    async def _save_snapshot(self) -> None:
        """Snapshot the index as it reflects the feed position now (nothing pending). One
        that cannot be written (a full or read-only disk) is logged and tried again at the
        next period: the replica serves on, and never builds again for it."""
        if self._snapshots is None or self._pending or self.position == "0-0":
            return
        began = time.monotonic()
        try:
            path = await asyncio.to_thread(self._snapshots.save, self.index, self.position)
        except (OSError, VectorIndexError) as error:
            log.warning(
                "cannot write the index snapshot (%s); next try in %.0f s",
                error,
                self._snapshot_every_s,
            )
            return
        finally:
            self._saved_at = time.monotonic()
        log.info("index snapshot %s written in %.1f s", path, self._saved_at - began)

    async def _rebase_if_due(self) -> None:
        """Move a shared index whose delta grew onto a newer base: the current snapshot of
        this host when it is newer than the index's base (another process wrote it), else a
        snapshot of the index as it is, written now."""
        index = self.index
        if not isinstance(index, SharedFlatIndex) or self._snapshots is None or self._pending:
            return
        due = max(REBASE_MIN, REBASE_SHARE * index.base_size)
        if index.delta_size < due or time.monotonic() - self._rebased_at < REBASE_EVERY_S:
            return
        self._rebased_at = time.monotonic()
        newer = await asyncio.to_thread(self._snapshots.position)
        if newer is None or _stream_id(newer) <= _stream_id(self._base_position):
            await self._save_snapshot()
        try:
            await self._adopt(index)
        except (VectorIndexError, OSError) as error:
            log.warning("cannot move the index onto the newest snapshot: %s", error)

    async def _adopt(self, index: SharedFlatIndex) -> None:
        """Map the current snapshot into a copy, bring the copy to the newest published state
        from the feed since the snapshot's position, then swap it in whole. Requests are
        served from `index` meanwhile."""
        began = time.monotonic()
        copy = index.empty_copy()
        assert self._snapshots is not None
        position = await asyncio.to_thread(self._snapshots.load, copy)
        if position is None or not await self.state.feed_kept_since(position):
            return
        catch_up = IndexFollower(self.state, copy, self.catalog, self._before_version)
        catch_up.position, catch_up.served = position, self.served
        await self._drop_deleted(copy)
        await catch_up.settle()
        index.take(copy)
        self.position, self._base_position = catch_up.position, position
        if catch_up.served is not None and catch_up.served != self.served:
            self.served = catch_up.served
            if self.on_served is not None:
                self.on_served(self.served)
        log.info(
            "index moved onto the snapshot at %s (%d items mapped) in %.2f s",
            position,
            copy.base_size,
            time.monotonic() - began,
        )

    async def follow(self, block_ms: int = 1_000, check_every_s: float = 10.0) -> None:
        """Apply feed entries until cancelled; a Redis error is logged and retried. Every
        `check_every_s` and after an error, a follower whose feed position was trimmed away
        (it fell behind by more than the retention) rebuilds from Redis instead of skipping."""
        checked = time.monotonic()
        while True:
            self._raise_if_stopping()
            try:
                if time.monotonic() - checked >= check_every_s:
                    if not await self.state.feed_kept_since(self.position):
                        log.warning("item feed trimmed past position %s: rebuilding", self.position)
                        await self.rebuild()
                    checked = time.monotonic()
                entries = await self.state.read_feed(self.position, block_ms=block_ms)
                for entry in entries:
                    await self.apply(entry)
                if entries:
                    await self.settle()
                    await self._rebase_if_due()
                if (
                    self._snapshot_every_s > 0
                    and time.monotonic() - self._saved_at >= self._snapshot_every_s
                ):
                    await self._save_snapshot()
            except Exception:
                self._unless_stopping("item feed: read failed")
                checked = 0.0
                await asyncio.sleep(1.0)

    def _raise_if_stopping(self) -> None:
        """redis-py can absorb a cancellation that lands during a read (it may surface as
        ConnectionError, or not at all): a retry loop must check for it, or it never stops."""
        task = asyncio.current_task()
        if self._stopping or (task is not None and task.cancelling()):
            raise asyncio.CancelledError

    def _unless_stopping(self, what: str) -> None:
        """Log a failure to retry it, unless the follower is stopping (then stop)."""
        self._raise_if_stopping()
        log.exception("%s, retrying in 1 s", what)
