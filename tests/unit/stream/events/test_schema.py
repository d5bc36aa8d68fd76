"""Event schemas: what is accepted, what is rejected and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events.schema import (
    ClickEvent,
    EventError,
    OrderEvent,
    decode_event,
    json_schemas,
    validate_event,
)

LIMIT = 64 * 1024


def click(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "click",
        "event_id": "e1",
        "user_id": "u1",
        "ts": 1767225600000,
        "item_id": "i1",
        **overrides,
    }


def order(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "order",
        "event_id": "e2",
        "user_id": "u1",
        "ts": "2026-01-01T00:00:00Z",
        "order_id": "o1",
        "items": [{"item_id": "i1", "quantity": 2, "price": 9.5}],
        **overrides,
    }


def reason_for(document: Any) -> str:
    with pytest.raises(EventError) as caught:
        validate_event(document)
    return caught.value.reason


def test_click_and_order_parse_to_their_types() -> None:
    assert isinstance(validate_event(click()), ClickEvent)
    parsed = validate_event(order())
    assert isinstance(parsed, OrderEvent)
    assert parsed.items[0].quantity == 2


@pytest.mark.parametrize(
    "ts",
    [
        1767225600000,
        "2026-01-01T00:00:00Z",
        "2026-01-01T01:00:00+01:00",
        "2026-01-01T00:00:00.000+00:00",
    ],
)
def test_event_time_is_utc_whatever_the_input_form(ts: Any) -> None:
    assert validate_event(click(ts=ts)).ts == datetime(2026, 1, 1, tzinfo=UTC)


def test_wire_form_round_trips() -> None:
    event = validate_event(order(session_id="s", context={"page": "cart", "position": 1}))
    assert decode_event(event.to_json(), LIMIT) == event
    assert json.loads(event.to_json())["ts"] == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        (click(type="view"), "unknown event type 'view'"),
        ({k: v for k, v in click().items() if k != "type"}, "type: missing"),
        ({k: v for k, v in click().items() if k != "item_id"}, "item_id: Field required"),
        (click(event_id=""), "event_id"),
        (click(user_id="u" * 129), "user_id"),
        (click(ts="2026-01-01T00:00:00"), "needs a UTC offset"),
        (click(ts=1767225600), "seconds given?"),
        (click(ts=True), "not a boolean"),
        (click(ts="tomorrow"), "not an RFC 3339 time"),
        (click(schema_version=2), "unsupported schema_version 2"),
        (click(colour="red"), "colour: unknown field"),
        (click(item_id=7), "item_id: Input should be a valid string"),
        (click(context={"page": "x" * 3000}), "context"),
        (click(context={"mood": "happy"}), "context.mood: unknown field"),
        (order(items=[]), "items"),
        (order(items=[{"item_id": "i", "quantity": 0}]), "items.0.quantity"),
        (order(items=[{"item_id": "i", "quantity": "2"}]), "items.0.quantity"),
        (order(items=[{"item_id": "i", "price": -1}]), "items.0.price"),
        (order(items=[{"item_id": "i", "price": float("nan")}]), "items.0.price"),
        (order(items=[{"item_id": "i"}] * 501), "items"),
        ([click()], "must be a JSON object"),
    ],
)
def test_invalid_documents_are_rejected_with_a_reason_naming_the_problem(
    document: Any, fragment: str
) -> None:
    assert fragment in reason_for(document)


def test_whole_number_prices_are_accepted() -> None:
    parsed = validate_event(order(items=[{"item_id": "i", "price": 10}]))
    assert isinstance(parsed, OrderEvent)
    assert parsed.items[0].price == 10.0


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{nope", "not valid UTF-8 JSON"),
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
        (b'{"x": "' + b"a" * LIMIT + b'"}', "exceeds"),
    ],
)
def test_undecodable_payloads_are_rejected(payload: bytes, fragment: str) -> None:
    with pytest.raises(EventError) as caught:
        decode_event(payload, LIMIT)
    assert fragment in caught.value.reason


def test_a_json_schema_is_exported_per_event_type() -> None:
    schemas = json_schemas()
    assert set(schemas) == {"click", "order"}
    assert "item_id" in schemas["click"]["required"]
    assert "items" in schemas["order"]["required"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
near_events = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["click", "order", "view", 3]),
        "event_id": st.text(max_size=130) | st.integers(),
        "user_id": st.text(max_size=130),
        "ts": st.integers() | st.floats() | st.text(max_size=30) | st.datetimes().map(str),
        "item_id": st.text(max_size=130) | json_values,
        "order_id": st.text(max_size=10),
        "items": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "item_id": st.text(max_size=5),
                    "quantity": json_values,
                    "price": st.floats() | st.integers(),
                },
            ),
            max_size=4,
        ),
        "context": json_values,
        "schema_version": st.integers(-2, 3),
    },
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, near_events))
def test_any_json_document_becomes_an_event_or_a_reasoned_rejection(document: Any) -> None:
    payload = json.dumps(document).encode()
    outcome: ClickEvent | OrderEvent | EventError
    try:
        outcome = decode_event(payload, LIMIT)
    except EventError as error:
        outcome = error
    if isinstance(outcome, EventError):
        assert outcome.reason.strip()
    else:
        assert outcome.ts.tzinfo is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_event_error(payload: bytes) -> None:
    with pytest.raises(EventError):
        decode_event(payload, LIMIT)
