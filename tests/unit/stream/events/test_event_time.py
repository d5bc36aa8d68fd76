"""Event time against arrival: rejected past the clock skew ahead, and past the horizon behind
when one is set; a record without a timestamp is not judged."""

from __future__ import annotations

import pytest

from stream.events.event_time import EventTimeLimits
from stream.events.schema import EventError

ARRIVAL = 1_780_000_000_000
MINUTE = 60_000


def test_an_event_within_the_skew_or_of_any_age_passes_by_default() -> None:
    limits = EventTimeLimits()
    limits.check(ARRIVAL + 5 * MINUTE, ARRIVAL)
    limits.check(ARRIVAL - 10 * 365 * 1_440 * MINUTE, ARRIVAL)  # replays of old logs apply


def test_an_event_ahead_of_the_skew_is_rejected_with_the_setting_to_change() -> None:
    with pytest.raises(EventError, match=r"1\.0 h ahead of its arrival.*MAX_CLOCK_SKEW_S"):
        EventTimeLimits().check(ARRIVAL + 60 * MINUTE, ARRIVAL)


def test_an_event_past_the_horizon_is_rejected_when_one_is_set() -> None:
    limits = EventTimeLimits(max_age_ms=1_440 * MINUTE)
    limits.check(ARRIVAL - 1_000 * MINUTE, ARRIVAL)
    with pytest.raises(EventError, match=r"2\.0 d older than its arrival.*MAX_EVENT_AGE_S"):
        limits.check(ARRIVAL - 2 * 1_440 * MINUTE, ARRIVAL)


@pytest.mark.parametrize("arrival", [None, -1, 0])
def test_a_record_without_a_timestamp_is_not_judged(arrival: int | None) -> None:
    EventTimeLimits().check(ARRIVAL * 2, arrival)
