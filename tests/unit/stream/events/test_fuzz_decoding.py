"""Fuzzing the decode path every consumer shares: any bytes give an effect or a dead letter with
a reason, never an exception (malformed JSON, deep nesting, huge strings, wrong types, NaN and
infinite prices, odd unicode, unknown types)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.events import handlers, schema
from stream.events.handlers import DeadLetter, SourcePosition, handle_message
from stream.events.schema import EventError
from tests.strategies import encode, event_like, payloads

SOURCE = SourcePosition("clicks", 0, 1)
MAX_BYTES = 4096


def _check(outcome: object) -> None:
    if isinstance(outcome, DeadLetter):
        assert outcome.reason.strip()
        assert json.loads(outcome.to_json())["reason"] == outcome.reason
    else:
        assert outcome.interactions  # type: ignore[attr-defined]
        for interaction in outcome.interactions:  # type: ignore[attr-defined]
            assert interaction.user_id
            assert interaction.item_id
            assert math.isfinite(interaction.ts_ms)


@settings(max_examples=1_500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads, key=st.none() | st.binary(max_size=40))
def test_any_message_decodes_to_an_effect_or_a_dead_letter_with_a_reason(
    payload: bytes, key: bytes | None
) -> None:
    _check(handle_message(payload, key, SOURCE, MAX_BYTES))


@settings(max_examples=1_500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=event_like)
def test_event_shaped_documents_with_wrong_types_never_raise(document: dict[str, Any]) -> None:
    outcome = handle_message(encode(document), None, SOURCE, MAX_BYTES)
    _check(outcome)
    if not isinstance(outcome, DeadLetter):
        assert document.get("type") in ("click", "order")
        assert isinstance(document.get("user_id"), str)


def _click_at(ts: str) -> bytes:
    document = {"type": "click", "event_id": "e1", "user_id": "u", "item_id": "i", "ts": ts}
    return json.dumps(document).encode()


def test_a_time_at_the_edge_of_the_calendar_is_a_dead_letter_not_a_crash() -> None:
    # valid RFC 3339 that overflows datetime once converted to UTC (it crashed every consumer)
    for ts in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        outcome = handle_message(_click_at(ts), None, SOURCE, MAX_BYTES)
        assert isinstance(outcome, DeadLetter), ts
        assert "ts" in outcome.reason


def test_string_times_have_the_same_range_as_numeric_ones() -> None:
    for ts in ("3000-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1999-12-31T23:59:59Z"):
        outcome = handle_message(_click_at(ts), None, SOURCE, MAX_BYTES)
        assert isinstance(outcome, DeadLetter), ts
        assert "2000 and 2100" in outcome.reason
    assert not isinstance(
        handle_message(_click_at("2024-05-01T10:00:00+02:00"), None, SOURCE, MAX_BYTES), DeadLetter
    )


@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    moment=st.datetimes(timezones=st.timezones())
    | st.datetimes(
        timezones=st.sampled_from([timezone(timedelta(hours=h)) for h in (-23, -1, 1, 23)])
    )
)
def test_any_aware_time_in_the_calendar_gives_an_effect_or_a_dead_letter(moment: datetime) -> None:
    _check(handle_message(_click_at(moment.isoformat()), None, SOURCE, MAX_BYTES))


def test_an_unexpected_error_while_decoding_costs_one_record_as_a_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(payload: bytes, max_bytes: int) -> None:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(handlers, "decode_event", broken)
    outcome = handle_message(_click_at("2024-05-01T10:00:00Z"), b"k", SOURCE, MAX_BYTES)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "cannot decode: OverflowError: date value out of range"


def _reference_or_reason(payload: bytes) -> object:
    try:
        return schema._decode_reference(payload)
    except EventError as error:
        return error.reason


def _decoded_or_reason(payload: bytes) -> object:
    try:
        return schema.decode_event(payload, MAX_BYTES)
    except EventError as error:
        return error.reason


@settings(max_examples=1_500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads | event_like.map(encode))
def test_the_fast_decode_accepts_and_refuses_exactly_what_the_reference_decode_does(
    payload: bytes,
) -> None:
    if len(payload) <= MAX_BYTES:
        assert _decoded_or_reason(payload) == _reference_or_reason(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"event_id":"a","event_id":"b","user_id":"u","ts":"2026-01-01T00:00:00Z",'
        b'"type":"click","item_id":"i"}',
        b'{"event_id":"a\\ud800","user_id":"u","ts":"2026-01-01T00:00:00Z","type":"click",'
        b'"item_id":"i"}',
        b'\xef\xbb\xbf{"event_id":"a","user_id":"u","ts":"2026-01-01T00:00:00Z","type":"click",'
        b'"item_id":"i"}',
        b'{"event_id":"a","user_id":"u","ts":1767225600000,"type":"order","order_id":"o",'
        b'"items":[{"item_id":"i","quantity":2,"price":NaN}]}',
        b'{"event_id":"a","user_id":"u","ts":"2026-01-01T00:00:00Z","type":"click",'
        b'"item_id":"i","context":{"query":"' + "\N{GRINNING FACE}".encode() * 512 + b'"}}',
    ],
    ids=["duplicate key", "lone surrogate", "byte order mark", "NaN price", "context"],
)
def test_the_fast_decode_agrees_with_the_reference_on_json_corner_cases(payload: bytes) -> None:
    assert _decoded_or_reason(payload) == _reference_or_reason(payload)


def test_nesting_is_refused_by_its_depth_not_by_the_callers_stack() -> None:
    """Found by the test above: a list nested near the interpreter's recursion limit was
    'nested too deeply' from one decode and 'must be a JSON object' from the other."""
    deep = b"[" * 900 + b"]" * 900

    def at_depth(n: int) -> object:
        return at_depth(n - 1) if n else _decoded_or_reason(deep)

    assert _decoded_or_reason(deep) == "payload is nested too deeply"
    assert at_depth(60) == _reference_or_reason(deep) == "payload is nested too deeply"
    brackets_in_text = (
        b'{"event_id":"' + b"[" * 100 + b'","user_id":"u","ts":"2026-01-01T00:00:00Z",'
        b'"type":"click","item_id":"i"}'
    )
    assert not isinstance(_decoded_or_reason(brackets_in_text), str)
