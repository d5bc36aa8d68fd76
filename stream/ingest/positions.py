"""Where each ingest partition was applied up to, with Redis as the source of truth.

The worker writes each batch's last offset per partition in the same script as its effects, and
on every assignment resumes from Redis's offsets (Kafka's committed offsets where Redis has
none). Should Redis come back from an older snapshot while the worker runs, the offsets it holds
fall behind what the worker wrote: the worker then stops writing and rejoins its group, so the
new assignment re-reads everything Redis lost. No operator step, nothing applied twice (the
idempotency records went back with the effects).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from faust.types import TP, Message
from redis.exceptions import RedisError

from store.interaction_store import PartitionAdvance, RedisInteractionStore
from stream.events.handlers import partition_key

log = logging.getLogger(__name__)

REJOIN_AGAIN_S = 10.0  # a rejoin that brought no new assignment by then is asked for again


class AppliedPositions:
    """The applied offsets this worker expects Redis to hold for its partitions."""

    def __init__(self) -> None:
        self._store: RedisInteractionStore | None = None
        self._expected: dict[str, int | None] = {}
        self._rejoin: Callable[[], Awaitable[None]] | None = None
        self._rewinding_since: float | None = None

    def use(self, store: RedisInteractionStore) -> None:
        """Write to `store` from now on; offsets of another namespace are not checked until
        this worker wrote them there."""
        if store is not self._store:
            self._store = store
            self._expected.clear()

    def on_rewind(self, rejoin: Callable[[], Awaitable[None]]) -> None:
        """How to make the consumer group assign (and so seek) this worker's partitions anew."""
        self._rejoin = rejoin

    @property
    def rewinding(self) -> bool:
        """Whether Redis went back and the worker waits for its new assignment: batches
        fetched meanwhile are not applied (they are read again after the seek)."""
        return self._rewinding_since is not None

    async def resume_offsets(
        self, tps: Iterable[TP], committed: Mapping[TP, int | None] | None = None
    ) -> dict[TP, int]:
        """The next offset to read per partition that Redis holds an offset for; from now on
        each of `tps` is expected to hold what Redis holds now. With Redis away, none: the
        worker reads on from Kafka's `committed` offsets (a rebalance cannot wait) and expects
        Redis to hold at least the offset before each, which `check` verifies once it is back."""
        if self._store is None:
            raise RuntimeError("the worker has no store yet")
        store = self._store
        by_field = {field: tp for tp in tps for field in store.offset_fields(partition_key(*tp))}
        try:
            stored = await store.applied_offsets(list(by_field))
        except (RedisError, OSError) as error:
            log.warning("Redis away at assignment (%s): resuming from Kafka's offsets", error)
            known = committed or {}
            self._expected = {
                f: None if (offset := known.get(tp)) is None else offset - 1
                for f, tp in by_field.items()
            }
            self._rewinding_since = None
            return {}
        self._expected = {field: stored.get(field) for field in by_field}
        if self._rewinding_since is not None:
            log.warning("re-reading from the offsets Redis holds: %s", stored or "none")
        self._rewinding_since = None
        resume: dict[TP, int] = {}  # a cluster's shards: from the one behind the others
        for field, offset in stored.items():
            tp = by_field[field]
            resume[tp] = min(resume.get(tp, offset + 1), offset + 1)
        return resume

    def advances(self, messages: Sequence[Message]) -> list[PartitionAdvance]:
        """Each partition's last offset in `messages`, with the offset Redis should hold now."""
        if self._store is None:
            raise RuntimeError("the worker has no store yet")
        last: dict[str, int] = {}
        for message in messages:
            field = partition_key(message.topic, message.partition)
            last[field] = max(last.get(field, -1), message.offset)
        return [
            PartitionAdvance(kept, self._expected.get(kept, "*"), offset)
            for field, offset in last.items()
            for kept in self._store.offset_fields(field)
        ]

    def advanced(self, advances: Sequence[PartitionAdvance]) -> None:
        """The advances are written: expect them."""
        for advance in advances:
            before = self._expected.get(advance.partition)
            self._expected[advance.partition] = max(before or -1, advance.applied)

    async def check(self) -> None:
        """Rewind when Redis holds less than this worker wrote (it restarted from an older
        snapshot while no batch came): run on a timer. More than expected is no sign: a
        batch in flight may have written its offsets already (its script checks them)."""
        if self._store is None:
            return
        if self._rewinding_since is not None:
            if time.monotonic() - self._rewinding_since > REJOIN_AGAIN_S:
                await self.rewind("no new assignment came")
            return
        expected = {f: o for f, o in self._expected.items() if o is not None}
        stored = await self._store.applied_offsets(list(expected))
        behind = {f: stored.get(f) for f, o in expected.items() if stored.get(f, -1) < o}
        if behind:
            await self.rewind(f"Redis holds {behind}, behind what this worker wrote")

    async def rewind(self, why: str) -> None:
        """Stop applying and ask for a new assignment, which seeks to Redis's offsets."""
        log.error("applied offsets moved in Redis (%s): rejoining to re-read what it lost", why)
        self._rewinding_since = time.monotonic()
        if self._rejoin is not None:
            await self._rejoin()
