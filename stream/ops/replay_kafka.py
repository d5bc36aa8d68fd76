"""`recstream replay --from-kafka --since T [--until T]`: re-apply a time range of the ingest
topics through the same handlers, under a consumer group of its own (the live group's offsets
are untouched). Effects are idempotent on `event_id` within the idempotency horizon
(`RECSTREAM_DEDUP_TTL_S`), so nothing is counted twice; a range that reaches messages older
than the horizon is refused unless asked for (`--past-horizon`): their records may be gone."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from tqdm import tqdm

from store.interaction_store import Applied
from stream.config import Settings
from stream.events.event_time import EventTimeLimits
from stream.events.handlers import DeadLetter, Decoded, decode_record, partition_key
from stream.events.pseudonyms import Pseudonyms
from stream.events.topics import TopicNames
from stream.wiring import interaction_store, redis_client

_IDLE_POLLS = 3  # empty polls of 0.5 s in a row: the end of every partition is reached


@dataclass
class KafkaReplaySummary:
    """What a replay from Kafka did."""

    messages: int = 0
    applied: int = 0
    duplicates: int = 0
    invalid: int = 0
    unusable: int = 0  # valid events whose user's Redis keys hold another type: not applied
    conflicts: int = 0  # event ids applied before with other content: not applied
    past_horizon: int = 0  # messages older than the idempotency horizon, applied when asked
    dry_run: bool = False

    def render(self) -> str:
        if self.dry_run:
            return f"{self.messages} messages, {self.invalid} invalid (dry run: nothing applied)"
        return (
            f"{self.messages} messages: {self.applied} applied now, {self.duplicates} already "
            f"applied, {self.invalid} invalid (the live workers dead-letter those)"
            + (
                f", {self.unusable} not applied: a Redis key of their user holds another type"
                if self.unusable
                else ""
            )
            + (
                f", {self.conflicts} not applied: their event_id was applied before with other "
                "content (the live workers dead-letter those as conflicts)"
                if self.conflicts
                else ""
            )
            + (
                f"; {self.past_horizon} were older than the idempotency horizon "
                "(RECSTREAM_DEDUP_TTL_S): those may have counted twice"
                if self.past_horizon
                else ""
            )
        )


class RangeReader:
    """Reads every message of `topics` whose broker timestamp is in [since_ms, until_ms),
    decoded by the ingest handlers, under group `<app_id>-replay` (which commits nothing)."""

    def __init__(
        self,
        settings: Settings,
        since_ms: int | None,
        until_ms: int | None = None,
        topics: Sequence[str] | None = None,
        older_than_ms: int | None = None,
    ) -> None:
        if since_ms is not None and until_ms is not None and until_ms <= since_ms:
            raise ValueError("impossible time range: --until must be after --since")
        self.settings = settings
        self.since_ms = since_ms or 0
        self.until_ms = until_ms
        self.topics = list(topics or TopicNames.from_settings(settings).ingest)
        self.position: dict[str, int] = {}
        self.pseudonyms = Pseudonyms.of(settings.pseudonym_key)
        self.limits = EventTimeLimits.of(settings)
        self.older_than_ms = older_than_ms
        self.older = 0  # messages read whose broker timestamp is before `older_than_ms`

    def batches(self, *, progress: bool = True, desc: str = "replay") -> Iterator[Decoded]:
        """Decoded messages in partition order, a poll at a time, until every partition's end
        (or `until`); afterwards `position` holds the next offset of every partition."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=f"{self.settings.app_id}-replay",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            starts = self._starts(consumer)
            consumer.assign(list(starts))
            for tp, first in starts.items():
                consumer.seek(tp, first)
            idle = 0
            with tqdm(desc=desc, unit="msg", disable=not progress, file=sys.stderr) as bar:
                # Read to the end (end offsets are not asked for: some Kafka-protocol brokers
                # report them per batch); a partition stops at its first message past `until`.
                while starts and idle < _IDLE_POLLS:
                    polled = consumer.poll(timeout_ms=500, max_records=1_000)
                    idle = 0 if polled else idle + 1
                    batch: Decoded = []
                    for tp, messages in polled.items():
                        batch += self._decoded(consumer, tp, messages)
                        bar.update(len(messages))
                    if batch:
                        yield batch
                    if len(consumer.paused()) == len(starts):
                        break
        finally:
            consumer.close()

    def count_before(self, cutoff_ms: int) -> int:
        """Messages of the range whose broker timestamp is before `cutoff_ms`, counted by
        reading them (some Kafka-protocol brokers answer time lookups per batch)."""
        if self.since_ms >= cutoff_ms:
            return 0
        until = cutoff_ms if self.until_ms is None else min(cutoff_ms, self.until_ms)
        head = RangeReader(self.settings, self.since_ms, until, self.topics)
        return sum(len(batch) for batch in head.batches(progress=False))

    def _partitions(self, consumer: KafkaConsumer) -> list[TopicPartition]:
        known = consumer.topics()
        missing = [t for t in self.topics if t not in known]
        if missing:
            raise ValueError(f"no such topic: {', '.join(missing)}")
        return [
            TopicPartition(t, p)
            for t in self.topics
            for p in sorted(consumer.partitions_for_topic(t))
        ]

    def _decoded(
        self, consumer: KafkaConsumer, tp: TopicPartition, messages: list[ConsumerRecord]
    ) -> Decoded:
        out: Decoded = []
        for message in messages:
            if message.timestamp < self.since_ms:
                continue  # a broker may answer the offset of a whole batch
            if self.until_ms is not None and message.timestamp >= self.until_ms:
                consumer.pause(tp)
                break
            self.position[partition_key(tp.topic, tp.partition)] = message.offset + 1
            if self.older_than_ms is not None and message.timestamp < self.older_than_ms:
                self.older += 1
            out.append(
                decode_record(
                    message,
                    self.settings.max_event_bytes,
                    self.pseudonyms,
                    arrival_ms=message.timestamp,
                    limits=self.limits,
                )
            )
        return out

    def _starts(self, consumer: KafkaConsumer) -> dict[TopicPartition, int]:
        """The first offset at or after `since_ms` of each partition that has one; the others
        (nothing that recent) start `position` at their end."""
        partitions = self._partitions(consumer)
        found = consumer.offsets_for_times(dict.fromkeys(partitions, self.since_ms))
        quiet = [tp for tp, at in found.items() if at is None]
        ends = consumer.end_offsets(quiet) if quiet else {}
        self.position = {partition_key(tp.topic, tp.partition): end for tp, end in ends.items()}
        self.position |= {
            partition_key(tp.topic, tp.partition): at.offset for tp, at in found.items() if at
        }
        return {tp: at.offset for tp, at in found.items() if at is not None}


def replay_kafka(
    settings: Settings,
    since_ms: int,
    until_ms: int | None = None,
    topics: Sequence[str] | None = None,
    *,
    rate: float | None = None,
    dry_run: bool = False,
    progress: bool = True,
    past_horizon: bool = False,
) -> KafkaReplaySummary:
    """Re-apply every message of `topics` (default: clicks and orders) whose broker
    timestamp is in [since_ms, until_ms) to Redis, through the ingest handlers, at most
    `rate` messages/s; `dry_run` reads and validates but applies nothing. Messages older
    than the idempotency horizon are refused (ValueError, nothing applied) unless
    `past_horizon`: their idempotency records may have expired, so they could count twice."""
    if rate is not None and rate <= 0:
        raise ValueError("the rate must be positive")
    horizon_ms = int(time.time() * 1000) - settings.dedup_ttl_s * 1000
    reader = RangeReader(settings, since_ms, until_ms, topics, older_than_ms=horizon_ms)
    summary = KafkaReplaySummary(dry_run=dry_run)
    # the range's head is read first only where it may be refused before anything is applied;
    # otherwise the messages past the horizon are counted as they are read (`reader.older`)
    older = 0 if past_horizon or dry_run else reader.count_before(horizon_ms)
    if older:
        raise ValueError(
            f"{older:,} messages of the range were appended more than "
            f"RECSTREAM_DEDUP_TTL_S ({settings.dedup_ttl_s:,} s) ago: their idempotency "
            "records may be gone, so applying them again could count them twice. Start "
            "--since later, or pass --past-horizon (e.g. into an empty Redis) to apply them"
        )
    began = time.monotonic()
    # one loop and one client for the whole replay (a cluster client loads the layout once)
    with asyncio.Runner() as runner:
        client = redis_client(settings)
        try:
            store = interaction_store(settings, client)
            for batch in reader.batches(progress=progress):
                summary.messages += len(batch)
                effects = [o for _, o in batch if not isinstance(o, DeadLetter)]
                summary.invalid += len(batch) - len(effects)
                applied: list[Applied] = []
                if effects and not dry_run:
                    applied = runner.run(store.apply_many(effects))
                summary.applied += applied.count(Applied.NEW)
                summary.duplicates += applied.count(Applied.DUPLICATE)
                summary.unusable += applied.count(Applied.UNUSABLE_KEYS)
                summary.conflicts += applied.count(Applied.CONFLICT)
                if rate is not None:
                    time.sleep(max(0.0, began + summary.messages / rate - time.monotonic()))
        finally:
            runner.run(client.aclose())
    summary.past_horizon = reader.older
    return summary
