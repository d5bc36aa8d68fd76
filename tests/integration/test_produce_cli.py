"""`recstream produce FILE`: valid lines reach the topics, invalid ones are reported by line."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.cli import produce_file
from stream.config import Settings
from stream.topics import TopicNames
from tests.integration.conftest import read_topic

pytestmark = pytest.mark.integration


def test_produce_sends_valid_lines_and_reports_rejects_with_line_numbers(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"type":"click","event_id":"f1","user_id":"u","ts":1767225600000,"item_id":"i1"}\n'
        '{"type":"click","event_id":"f2","user_id":"u","ts":"noon","item_id":"i2"}\n'
        '{"type":"order","event_id":"f3","user_id":"u","ts":1767225600000,"order_id":"o",'
        '"items":[{"item_id":"i1"}]}\n'
        "not json\n"
    )
    summary = produce_file(settings, str(path), progress=False)
    assert (summary.sent, summary.rejected, summary.failed) == (2, 2, 0)
    assert summary.reasons[0].startswith("line 2: ts")
    assert summary.reasons[1].startswith("line 4: not valid JSON")

    topics = TopicNames.from_settings(settings)
    assert [e["event_id"] for e in read_topic(settings.kafka_bootstrap, topics.clicks, 1)] == ["f1"]
    assert [e["event_id"] for e in read_topic(settings.kafka_bootstrap, topics.orders, 1)] == ["f3"]
