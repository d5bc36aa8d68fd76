"""Event time checked against arrival time: a click dated in the future (a producer's clock or
unit mistake) would top trending for ever and head its user's history, so it is rejected past
a small clock skew; so is one older than the horizon, when a horizon is set."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from stream.config import Settings
from stream.events.schema import EventError


@dataclass(frozen=True, slots=True)
class EventTimeLimits:
    """How far an event's time may lie after its arrival, and before it (None: any age)."""

    max_skew_ms: int = 300_000
    max_age_ms: int | None = None

    @classmethod
    def of(cls, settings: Settings) -> EventTimeLimits:
        age = settings.max_event_age_s
        return cls(int(settings.max_clock_skew_s * 1000), None if age is None else int(age * 1000))

    def check(self, ts_ms: int, arrival_ms: int | None) -> None:
        """Raise EventError for an event time outside the limits around `arrival_ms` (the
        record's Kafka timestamp, or now for HTTP); no arrival time, no check."""
        if arrival_ms is None or arrival_ms <= 0:
            return
        if ts_ms - arrival_ms > self.max_skew_ms:
            raise EventError(
                f"ts {_iso(ts_ms)} is {_span(ts_ms - arrival_ms)} ahead of its arrival at "
                f"{_iso(arrival_ms)} (clock skew allowed: {_span(self.max_skew_ms)}; "
                "RECSTREAM_MAX_CLOCK_SKEW_S)"
            )
        if self.max_age_ms is not None and arrival_ms - ts_ms > self.max_age_ms:
            raise EventError(
                f"ts {_iso(ts_ms)} is {_span(arrival_ms - ts_ms)} older than its arrival at "
                f"{_iso(arrival_ms)} (horizon: {_span(self.max_age_ms)}; "
                "RECSTREAM_MAX_EVENT_AGE_S)"
            )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _span(ms: int) -> str:
    seconds = ms / 1000
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
