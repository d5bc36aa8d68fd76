"""Replay pacing and saved positions (dry runs: nothing is sent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.config import Settings
from stream.ops import replay_file as replay
from stream.ops.replay_file import Pace, replay_file

TS = 1_767_225_600_000


def _file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "events.jsonl"
    lines = [
        json.dumps(
            {"type": "click", "event_id": f"e{k}", "user_id": "u", "ts": TS + k, "item_id": "i"}
        )
        for k in range(n)
    ]
    path.write_text("\n".join([*lines, "not json"]) + "\n")
    return path


def test_a_saved_position_skips_the_lines_already_delivered(tmp_path: Path) -> None:
    path = _file(tmp_path, 10)
    position = tmp_path / "position.json"
    position.write_text(json.dumps({"file": str(path.resolve()), "line": 4}))
    summary = replay_file(Settings(), str(path), position=position, dry_run=True, progress=False)
    assert (summary.skipped, summary.sent, summary.rejected) == (4, 6, 1)
    assert summary.reasons[0].startswith("line 11:")


def test_a_position_of_another_file_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, 2)
    position = tmp_path / "position.json"
    position.write_text(json.dumps({"file": "/elsewhere.jsonl", "line": 1}))
    with pytest.raises(ValueError, match="elsewhere"):
        replay_file(Settings(), str(path), position=position, dry_run=True, progress=False)


def test_pace_is_a_rate_or_a_speedup_and_positive() -> None:
    assert Pace().due_s(1_000, 0, 10**9) == 0.0
    with pytest.raises(ValueError, match="not both"):
        Pace(rate=1, speedup=2)
    with pytest.raises(ValueError, match="positive"):
        Pace(rate=0)


class _Future:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error is not None:
            raise self.error


class _FlakyProducer:
    """Acknowledges every event but `e3`, whose delivery fails."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, event: object) -> _Future:
        failed = getattr(event, "event_id", "") == "e3"
        return _Future(TimeoutError("broker did not acknowledge") if failed else None)

    def flush(self) -> None: ...

    def close(self) -> None: ...


def test_a_resumed_replay_does_not_skip_a_line_whose_delivery_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "EventProducer", _FlakyProducer)
    monkeypatch.setattr(replay, "ensure_topics", lambda settings: None)
    path = _file(tmp_path, 10)  # e3 is on line 4
    position = tmp_path / "position.json"
    summary = replay_file(Settings(), str(path), position=position, progress=False, save_every=2)
    assert (summary.sent, summary.failed) == (9, 1)
    assert json.loads(position.read_text())["line"] == 3  # resume sends line 4 again
