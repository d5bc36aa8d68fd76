"""Pure ingest handlers: effects of valid events, dead letters for the rest."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from model.interaction import EventEffect, Interaction
from stream.events.handlers import DeadLetter, SourcePosition, effect_of, handle_message
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
