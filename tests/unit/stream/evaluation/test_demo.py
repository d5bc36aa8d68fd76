"""`recstream demo`'s events: MovieLens-100K (1997-98) must pass the wire schema."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stream.evaluation.demo import DemoOptions, load_events
from stream.evaluation.live import event_of
from tests.unit.stream.evaluation.test_datasets import cached_ml100k

WEEK_MS = 7 * 86_400_000


def test_movielens_is_moved_to_the_present_by_whole_weeks_so_every_event_is_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached_ml100k(tmp_path, monkeypatch)
    events = load_events(DemoOptions())
    assert [(e.user_id, e.item_id) for e in events] == [("196", "242"), ("186", "302")]
    assert events[1].ts_ms - events[0].ts_ms == (891_717_742 - 881_250_949) * 1000
    assert (events[0].ts_ms - 881_250_949_000) % WEEK_MS == 0  # weekdays and hours kept
    assert time.time() * 1000 - WEEK_MS <= events[-1].ts_ms <= time.time() * 1000
    for number, event in enumerate(events):
        event_of(number, event)  # raised ValidationError: "not a time between 2000 and 2100"
