"""`recstream demo`'s events: MovieLens-100K (1997-98) must pass the wire schema."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stream.evaluation.datasets import ML100K_MEMBER
from stream.evaluation.demo import DemoOptions, load_events
from stream.evaluation.live import event_of
from tests.unit.stream.evaluation.test_datasets import _cached_wheel

WEEK_MS = 7 * 86_400_000


def test_movielens_is_moved_to_the_present_by_whole_weeks_so_every_event_is_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    _cached_wheel(
        tmp_path,
        "recbole-1.2.1",
        ML100K_MEMBER,
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
    )
    events = load_events(DemoOptions())
    assert [(e.user_id, e.item_id) for e in events] == [("196", "242"), ("186", "302")]
    assert events[1].ts_ms - events[0].ts_ms == (891_717_742 - 881_250_949) * 1000
    assert (events[0].ts_ms - 881_250_949_000) % WEEK_MS == 0  # weekdays and hours kept
    assert time.time() * 1000 - WEEK_MS <= events[-1].ts_ms <= time.time() * 1000
    for number, event in enumerate(events):
        event_of(number, event)  # raised ValidationError: "not a time between 2000 and 2100"
