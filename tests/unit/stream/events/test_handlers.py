"""Pure ingest handlers: effects of valid events, dead letters for the rest; one decoder for
the records of every Kafka client; one event-time order of decoded records."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from aiokafka.structs import ConsumerRecord as AIOKafkaRecord
from faust.types.tuples import Message as FaustMessage
from kafka.consumer.fetcher import ConsumerRecord as KafkaPythonRecord

from model.interaction import EventEffect, Interaction
from stream.events.handlers import (
    DeadLetter,
    KafkaRecord,
    Outcome,
    SourcePosition,
    decode_record,
    effect_of,
    handle_message,
    in_event_order,
    partition_key,
)
from stream.events.schema import ClickEvent, OrderEvent, OrderLine

SOURCE = SourcePosition("recstream.clicks", 2, 41)
TS = 1767225600000
AT = datetime.fromtimestamp(TS / 1000, UTC)


def test_a_click_is_one_click_interaction() -> None:
    effect = effect_of(ClickEvent(event_id="e", user_id="u", ts=AT, item_id="i"))
    assert effect == EventEffect("e", "u", (Interaction("u", "i", "click", TS),))


def test_an_order_is_one_order_interaction_per_line_with_its_quantity() -> None:
    lines = [OrderLine(item_id="a", quantity=2), OrderLine(item_id="b")]
    effect = effect_of(OrderEvent(event_id="e", user_id="u", ts=AT, order_id="o", items=lines))
    assert effect.interactions == (
        Interaction("u", "a", "order", TS, 2),
        Interaction("u", "b", "order", TS, 1),
    )


def test_a_valid_message_becomes_its_effect() -> None:
    payload = ClickEvent(event_id="e", user_id="u", ts=AT, item_id="i").to_json()
    outcome = handle_message(payload, b"u", SOURCE, 65536)
    assert isinstance(outcome, EventEffect)
    assert outcome.event_id == "e"


def test_a_bad_message_becomes_a_dead_letter_with_reason_origin_and_original_bytes() -> None:
    outcome = handle_message(b"\xffnot json", b"k", SOURCE, 65536)
    assert isinstance(outcome, DeadLetter)
    record = json.loads(outcome.to_json())
    assert "not valid UTF-8 JSON" in record["reason"]
    assert (record["topic"], record["partition"], record["offset"]) == ("recstream.clicks", 2, 41)
    assert base64.b64decode(record["payload_b64"]) == b"\xffnot json"
    assert record["payload"] is None
    assert record["key"] == "k"


def test_a_message_without_value_is_dead_lettered() -> None:
    outcome = handle_message(None, None, SOURCE, 65536)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "message has no value"


def _records(key: bytes | None, value: bytes | None) -> list[KafkaRecord]:
    """The same message as Faust, aiokafka and kafka-python hand it over."""
    return [
        FaustMessage("t", 4, 17, 1.0, 0, None, key, value, None),
        AIOKafkaRecord("t", 4, 17, 1000, 0, key, value, None, 0, 0, ()),
        KafkaPythonRecord("t", 4, -1, 17, 1000, 0, key, value, [], None, 0, 0, 0),
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"u", ClickEvent(event_id="e", user_id="u", ts=AT, item_id="i").to_json()),
        (b"u", b'{"type": "click"}'),
        (None, None),
    ],
)
def test_every_kafka_clients_record_decodes_alike(key: bytes | None, value: bytes | None) -> None:
    decoded = [decode_record(r, max_bytes=10_000) for r in _records(key, value)]
    sources = {source for source, _ in decoded}
    assert sources == {SourcePosition("t", 4, 17)}
    outcomes = [
        (o.reason, o.key, o.payload) if isinstance(o, DeadLetter) else o for _, o in decoded
    ]
    assert outcomes[0] == outcomes[1] == outcomes[2]


def test_a_partition_key_names_topic_and_partition() -> None:
    assert (
        partition_key("recstream.clicks", 3)
        == SourcePosition("recstream.clicks", 3, 9).partition_key
    )


def _click(partition: int, offset: int, ts: int, event_id: str) -> tuple[SourcePosition, Outcome]:
    effect = EventEffect(event_id, "u", (Interaction("u", "i", "click", ts),))
    return SourcePosition("clicks", partition, offset), effect


def test_partitions_interleave_by_event_time_then_event_id_each_keeping_its_order() -> None:
    batch = [
        _click(0, 0, 10, "b"),
        _click(0, 1, 30, "z"),
        _click(1, 0, 20, "c"),
        _click(1, 1, 30, "a"),
        _click(0, 2, 25, "y"),  # out of time order within partition 0: stays after offset 1
    ]
    ordered = [(s.partition, s.offset) for s, _ in in_event_order(batch)]
    assert ordered == [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2)]


def test_the_order_does_not_depend_on_how_reads_interleaved() -> None:
    p0 = [_click(0, n, ts, f"e0-{n}") for n, ts in enumerate([5, 5, 9, 12])]
    p1 = [_click(1, n, ts, f"e1-{n}") for n, ts in enumerate([5, 7, 9, 9])]
    one_read = list(in_event_order(p0 + p1))
    interleaved = list(in_event_order([x for pair in zip(p1, p0, strict=True) for x in pair]))
    assert one_read == interleaved
    assert [o.event_id for _, o in one_read if isinstance(o, EventEffect)] == [
        "e0-0",
        "e0-1",
        "e1-0",
        "e1-1",
        "e0-2",
        "e1-2",
        "e1-3",
        "e0-3",
    ]
