"""Reading JSONL and CSV event files with line numbers."""

from __future__ import annotations

from pathlib import Path

from stream.event_files import read_events
from stream.events import ClickEvent, OrderEvent


def test_jsonl_keeps_line_numbers_and_reports_invalid_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"type":"click","event_id":"a","user_id":"u","ts":1767225600000,"item_id":"i"}\n'
        "\n"
        "{broken\n"
        '{"type":"click","event_id":"b","user_id":"u","ts":"bad","item_id":"i"}\n'
    )
    records = list(read_events(str(path)))
    assert [r.line for r in records] == [1, 3, 4]
    assert isinstance(records[0].event, ClickEvent)
    assert "not valid JSON" in (records[1].error or "")
    assert "ts" in (records[2].error or "")


def test_csv_rows_sharing_an_event_id_form_one_order(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,type,user_id,ts,item_id,order_id,quantity,price\n"
        "e1,click,u1,1767225600000,i1,,,\n"
        "e2,order,u1,2026-01-01T00:00:00Z,i1,o1,2,9.5\n"
        "e2,order,u1,2026-01-01T00:00:00Z,i2,o1,1,3\n"
        "e3,click,u2,1767225600000,,,,\n"
    )
    records = list(read_events(str(path)))
    assert [r.line for r in records] == [2, 3, 5]
    order = records[1].event
    assert isinstance(order, OrderEvent)
    assert [(line.item_id, line.quantity, line.price) for line in order.items] == [
        ("i1", 2, 9.5),
        ("i2", 1, 3.0),
    ]
    assert "item_id" in (records[2].error or "")
