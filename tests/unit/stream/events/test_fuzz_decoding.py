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

from stream.events import handlers
from stream.events.handlers import DeadLetter, SourcePosition, handle_message
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
