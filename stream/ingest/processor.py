"""One batch of ingest messages applied: effects to Redis, bad messages to the dead-letter
topic; the batch's users are then re-embedded with the served model version beside the next
batches (`embed_users`).

Offsets are acked only after a batch's effects are in Redis (or its bad messages are in the
dead-letter topic), so delivery is at-least-once; effects are idempotent on `event_id`, so
the outcome is exactly-once. Each batch's offsets are written to Redis with its effects
(`AppliedPositions`): what the worker resumes from, even when Redis loses its newest writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from faust.types import TP, ConsumerT, Message, TopicT

from model.interaction import EventEffect
from store.interaction_store import (
    Applied,
    AppliedOffsetsMovedError,
    PartitionAdvance,
    RedisInteractionStore,
)
from stream.events.event_time import EventTimeLimits
from stream.events.handlers import (
    DeadLetter,
    SourcePosition,
    dead_letter,
    decode_record,
    record_bytes,
)
from stream.events.pseudonyms import Pseudonyms
from stream.ingest.metrics import WorkerMetrics
from stream.ingest.positions import AppliedPositions
from stream.user_vectors import UserVectorWriter
from stream.wiring import retrying

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Pending:
    effect: EventEffect
    source: SourcePosition
    key: bytes | None
    payload: bytes
    produced_s: float


@dataclass(frozen=True, slots=True)
class Prepared:
    """A decoded batch: its messages, and the events to apply (bad ones are dead-lettered)."""

    messages: Sequence[Message]
    pending: list[_Pending]


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
    """Applies batches of Kafka messages (effects to Redis, bad messages to the DLQ) and
    re-embeds their users with the served model version beside them (`embed_users`)."""

    def __init__(
        self,
        store: RedisInteractionStore,
        users: UserVectorWriter | None,
        dlq: TopicT,
        max_event_bytes: int,
        metrics: WorkerMetrics | None = None,
        offsets: ProcessedOffsets | None = None,
        pseudonyms: Pseudonyms | None = None,
        limits: EventTimeLimits | None = None,
        positions: AppliedPositions | None = None,
    ) -> None:
        self._store = store
        self.positions = positions or AppliedPositions()
        self.positions.use(store)
        self._limits = limits
        self._dlq = dlq
        self._max_event_bytes = max_event_bytes
        self._users = users
        self._metrics = metrics or WorkerMetrics.create()
        self.offsets = offsets or ProcessedOffsets()
        self._pseudonyms = pseudonyms
        self._to_embed: dict[str, float] = {}  # user -> when their oldest waiting event was made
        self._embed_wanted = asyncio.Event()

    def retarget(self, store: RedisInteractionStore, users: UserVectorWriter | None) -> None:
        """Write to another namespace from the next batch on (a promote or a rollback)."""
        self._store = store
        self._users = users
        self.positions.use(store)

    async def prepare(self, messages: Sequence[Message]) -> Prepared | None:
        """Decode a batch and dead-letter its bad messages: what may run while the batch
        before is being applied. None while rewinding."""
        if self.positions.rewinding:
            return None
        pending: list[_Pending] = []
        for msg in messages:
            self.offsets.seen(msg.tp, msg.offset)
            source, outcome = decode_record(
                msg,
                self._max_event_bytes,
                self._pseudonyms,
                arrival_ms=int(msg.timestamp * 1000),  # Faust's timestamps are in seconds
                limits=self._limits,
            )
            if isinstance(outcome, DeadLetter):
                await self._dead_letter(outcome)
            else:
                key, value = record_bytes(msg)
                pending.append(_Pending(outcome, source, key, value or b"", msg.timestamp))
        return Prepared(messages, pending)

    async def apply(self, prepared: Prepared | None) -> bool:
        """Apply a prepared batch (after the one before it: the offsets it expects Redis to
        hold are what that one wrote), then queue its users to re-embed; False where it was
        left to be read again (Redis went back to an older snapshot: its partitions are being
        sought back to what Redis holds)."""
        if prepared is None or self.positions.rewinding:
            return False
        pending = prepared.pending
        advances = self.positions.advances(prepared.messages)
        try:
            await self._apply(pending, advances)
        except AppliedOffsetsMovedError as moved:
            await self.positions.rewind(str(moved))
            return False
        self.positions.advanced(advances)
        if self._users is not None:
            for item in pending:  # the oldest event of each user waiting to be re-embedded
                self._to_embed.setdefault(item.effect.user_id, item.produced_s)
            if self._to_embed:
                self._embed_wanted.set()
        return True

    async def embed_users(self) -> None:
        """Re-embed the users of applied batches with the served model version, for as long
        as the worker runs: between the applies (a new version's model is read from disk in
        a thread, once a second), users of several batches in one go while it is behind."""
        while True:
            await self._embed_wanted.wait()
            self._embed_wanted.clear()
            waiting, self._to_embed = self._to_embed, {}
            if self._users is None or not waiting:
                continue
            try:
                written = await self._retrying(partial(self._users.refresh, list(waiting)))
            except Exception:
                log.exception(
                    "re-embedding %d users failed; their vectors stay older", len(waiting)
                )
                continue
            self._metrics.user_vectors.inc(written)
            if written:  # freshness counts each user's oldest event the new vector reflects
                now = time.time()
                for produced_s in waiting.values():
                    self._metrics.freshness.observe(max(0.0, now - produced_s))

    async def _apply(self, pending: list[_Pending], advances: list[PartitionAdvance]) -> None:
        """Apply the batch and its partition offsets in one call; an event the store cannot
        apply is dead-lettered with the reason. Should the call itself fail (a bug, not an
        outage: outages are waited out), each event is tried alone, so only the failing ones
        are dead-lettered, and the offsets are written last."""
        try:
            outcomes = await self._retrying(
                partial(self._store.apply_many, [p.effect for p in pending], advances)
            )
        except AppliedOffsetsMovedError:
            raise
        except Exception:
            log.exception("batch apply failed; applying its %d events one by one", len(pending))
            for item in pending:
                try:
                    alone = await self._retrying(partial(self._store.apply_many, [item.effect]))
                except Exception as error:
                    await self._cannot_apply(item, f"{type(error).__name__}: {error}")
                else:
                    await self._count(item, alone[0])
            await self._retrying(partial(self._store.apply_many, [], advances))
            return
        self._metrics.events.inc(outcomes.count(Applied.NEW))
        for item, outcome in zip(pending, outcomes, strict=True):
            if outcome is not Applied.NEW and outcome is not Applied.DUPLICATE:
                await self._count(item, outcome)

    async def _count(self, item: _Pending, outcome: Applied) -> None:
        if outcome is Applied.NEW:
            self._metrics.events.inc()
        elif outcome is Applied.UNUSABLE_KEYS:
            await self._cannot_apply(item, "a Redis key of this user holds another type")
        elif outcome is Applied.CONFLICT:
            await self._refuse(
                item,
                f"conflict: event_id {item.effect.event_id!r} was applied before with other "
                "content (user, items, time or quantities); the first is kept",
            )

    async def _cannot_apply(self, item: _Pending, why: str) -> None:
        await self._refuse(item, f"handler error: {why}"[:500])

    async def _refuse(self, item: _Pending, reason: str) -> None:
        """Dead-letter a decoded event the store did not apply, with the reason."""
        await self._dead_letter(
            dead_letter(reason, item.source, item.key, item.payload, self._pseudonyms)
        )

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """`retrying`, counted in this worker's metrics."""
        return await retrying(call, retries=self._metrics.redis_retries)

    async def _dead_letter(self, letter: DeadLetter) -> None:
        source = str(letter.source)
        if await self._retrying(partial(self._store.was_dead_lettered, source)):
            return
        log.warning("dead-lettering %s: %s", source, letter.reason)
        delivery = await self._dlq.send(key=letter.key, value=letter.to_json())
        await delivery
        self._metrics.dead_letters.inc()
        await self._retrying(partial(self._store.mark_dead_lettered, source))
