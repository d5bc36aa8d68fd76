"""Pure ingest handlers: a Kafka record -> its position and the effect to apply, or a
dead-letter record with the reason; and the one event-time order of decoded records.

Shared by the worker, the trainer, replay and rebuild, so each treats every message the same way
whichever Kafka client read it.
"""

from __future__ import annotations

import base64
import heapq
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from model.interaction import EventEffect, Interaction
from stream.events.event_time import EventTimeLimits
from stream.events.pseudonyms import Pseudonyms
from stream.events.schema import ClickEvent, EventError, OrderEvent, decode_event

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a message came from."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def partition_key(self) -> str:
        """The key of this position's partition in offset maps (checkpoints, replay)."""
        return partition_key(self.topic, self.partition)


def partition_key(topic: str, partition: int) -> str:
    """`topic/partition`: how offset maps (a checkpoint's position, replay's) name a partition.

    >>> partition_key("recstream.clicks", 3)
    'recstream.clicks/3'
    """
    return f"{topic}/{partition}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be applied, with the reason and its origin."""

    reason: str
    source: SourcePosition
    key: bytes | None
    payload: bytes

    def to_json(self) -> bytes:
        """Dead-letter value: original bytes (base64, and as text if UTF-8), reason, origin."""
        try:
            text: str | None = self.payload.decode()
        except UnicodeDecodeError:
            text = None
        record = {
            "reason": self.reason,
            "topic": self.source.topic,
            "partition": self.source.partition,
            "offset": self.source.offset,
            "key": self.key.decode(errors="replace") if self.key is not None else None,
            "payload_b64": base64.b64encode(self.payload).decode(),
            "payload": text,
            "dead_lettered_at_ms": int(time.time() * 1000),
        }
        return json.dumps(record, separators=(",", ":")).encode()


def effect_of(event: ClickEvent | OrderEvent, user_id: str | None = None) -> EventEffect:
    """The interactions an event contributes to user and item state; with `user_id`, as that
    user's (a pseudonym) instead of the event's."""
    ts = event.ts_ms
    user = event.user_id if user_id is None else user_id
    if isinstance(event, ClickEvent):
        interactions: tuple[Interaction, ...] = (Interaction(user, event.item_id, "click", ts),)
    else:
        interactions = tuple(
            Interaction(user, line.item_id, "order", ts, line.quantity) for line in event.items
        )
    return EventEffect(event.event_id, user, interactions)


def handle_message(
    payload: bytes | None,
    key: bytes | None,
    source: SourcePosition,
    max_bytes: int,
    pseudonyms: Pseudonyms | None = None,
    *,
    arrival_ms: int | None = None,
    limits: EventTimeLimits | None = None,
) -> EventEffect | DeadLetter:
    """Decode and validate one message; never raises for bad input. With `pseudonyms`, the
    effect and the dead letter hold the user's pseudonym, never the raw id. Any exception
    while decoding (a bug the validators missed) costs this one record, as a dead letter with
    the error: never the batch, never the consumer."""
    if payload is None:
        return dead_letter("message has no value", source, key, b"", pseudonyms)
    try:
        event = decode_event(payload, max_bytes)
        if limits is not None:
            limits.check(event.ts_ms, arrival_ms)
        return effect_of(event, None if pseudonyms is None else pseudonyms.user(event.user_id))
    except EventError as error:
        reason = error.reason
    except Exception as error:
        log.exception("undecodable record at %s", source.partition_key)
        reason = f"cannot decode: {type(error).__name__}: {error}"[:500]
    return dead_letter(reason, source, key, payload, pseudonyms)


def dead_letter(
    reason: str,
    source: SourcePosition,
    key: bytes | None,
    payload: bytes,
    pseudonyms: Pseudonyms | None,
) -> DeadLetter:
    """The dead letter of a rejected message; with `pseudonyms`, its user id pseudonymised
    (every dead letter is built here, so none keeps a raw id)."""
    if pseudonyms is not None:
        payload, key = pseudonyms.redact(payload, key)
    return DeadLetter(reason, source, key, payload)


Outcome = EventEffect | DeadLetter
DecodedRecord = tuple[SourcePosition, Outcome]
Decoded = list[DecodedRecord]


class KafkaRecord(Protocol):
    """What every Kafka client's record has (Faust's message, aiokafka's and kafka-python's
    `ConsumerRecord`); key and value are bytes, or None, or a bytes-like view of them."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> object: ...

    @property
    def value(self) -> object: ...


def _as_bytes(raw: object) -> bytes | None:
    if raw is None or isinstance(raw, bytes):
        return raw
    if isinstance(raw, bytearray | memoryview):
        return bytes(raw)
    return str(raw).encode()


def record_bytes(record: KafkaRecord) -> tuple[bytes | None, bytes | None]:
    """A record's key and value as bytes (None where absent)."""
    return _as_bytes(record.key), _as_bytes(record.value)


def decode_record(
    record: KafkaRecord,
    max_bytes: int,
    pseudonyms: Pseudonyms | None = None,
    *,
    arrival_ms: int | None = None,
    limits: EventTimeLimits | None = None,
) -> tuple[SourcePosition, Outcome]:
    """A Kafka record's position and its effect or dead letter; never raises for bad input.
    With `limits`, an event time too far from `arrival_ms` (the record's timestamp, in ms:
    each caller knows its client's unit) is a dead letter too."""
    source = SourcePosition(record.topic, record.partition, record.offset)
    key, value = record_bytes(record)
    outcome = handle_message(
        value, key, source, max_bytes, pseudonyms, arrival_ms=arrival_ms, limits=limits
    )
    return source, outcome


def _event_order(item: tuple[SourcePosition, Outcome]) -> tuple[int, str]:
    outcome = item[1]
    if isinstance(outcome, DeadLetter) or not outcome.interactions:
        return (0, "")
    return (outcome.interactions[0].ts_ms, outcome.event_id)


def in_event_order(decoded: Iterable[DecodedRecord]) -> Iterator[DecodedRecord]:
    """Records of several partitions merged by (event time, event id), each partition's own
    order kept, as offline training sees them: the same records give the same sequence
    however the reads interleaved. Dead letters and empty effects sort first."""
    partitions: dict[str, Decoded] = {}
    for item in decoded:
        partitions.setdefault(item[0].partition_key, []).append(item)
    return merged_in_event_order([partitions[p] for p in sorted(partitions)])


def merged_in_event_order(partitions: Iterable[Iterable[DecodedRecord]]) -> Iterator[DecodedRecord]:
    """`in_event_order` of records already split by partition (sorted by partition key), each
    in its own order: streams are merged lazily, nothing is held but their heads."""
    return heapq.merge(*partitions, key=_event_order)
