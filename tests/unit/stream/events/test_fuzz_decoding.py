"""Fuzzing the decode path every consumer shares: any bytes give an effect or a dead letter with
a reason, never an exception (malformed JSON, deep nesting, huge strings, wrong types, NaN and
infinite prices, odd unicode, unknown types)."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
