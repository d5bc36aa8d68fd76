"""Reading JSONL, CSV and Parquet event files with line numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from stream.events.files import read_events
from stream.events.schema import ClickEvent, OrderEvent


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


def test_parquet_rows_read_like_csv_rows_numbered_from_one(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    from pyarrow import parquet

    path = tmp_path / "events.parquet"
    table = pa.table(
        {
            "event_id": ["e1", "e2", "e2", "e3"],
            "type": ["click", "order", "order", "click"],
            "user_id": ["u1", "u1", "u1", "u2"],
            "ts": pa.array(
                [datetime(2026, 1, 1, tzinfo=UTC)] * 3 + [datetime(2026, 1, 2, tzinfo=UTC)],
                pa.timestamp("ms", tz="UTC"),
            ),
            "item_id": ["i1", "i1", "i2", None],
            "order_id": [None, "o1", "o1", None],
            "quantity": [None, 2, 1, None],
            "price": [None, 9.5, 3.0, None],
        }
    )
    parquet.write_table(table, path)
    records = list(read_events(str(path)))
    assert [r.line for r in records] == [1, 2, 4]
    click, order = records[0].event, records[1].event
    assert isinstance(click, ClickEvent)
    assert click.ts == datetime(2026, 1, 1, tzinfo=UTC)
    assert isinstance(order, OrderEvent)
    assert [(line.item_id, line.quantity, line.price) for line in order.items] == [
        ("i1", 2, 9.5),
        ("i2", 1, 3.0),
    ]
    assert "item_id" in (records[2].error or "")


def test_an_unreadable_parquet_file_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "broken.parquet"
    path.write_text("not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        list(read_events(str(path)))


def test_rows_without_event_ids_are_events_with_ids_derived_from_their_content(
    tmp_path: Path,
) -> None:
    """`recstream data` writes no event_id: five clicks are five events (they were rejected
    as one 'order'), an order's lines one order, the same file the same ids every time."""
    path = tmp_path / "events.csv"
    path.write_text(
        "type,user_id,item_id,ts,quantity\n"
        + "".join(f"click,u1,i{n},{1767225600000 + n},\n" for n in range(4))
        + "click,u1,i0,1767225600000,\n"  # the first click again: a second click
        + "order,u1,i1,1767225700000,2\norder,u1,i2,1767225700000,1\n"
        + "order,u2,i1,1767225700000,1\n"
    )
    records = list(read_events(str(path)))
    assert [r.error for r in records] == [None] * 7
    events = [r.event for r in records]
    assert [type(e).__name__ for e in events] == ["ClickEvent"] * 5 + ["OrderEvent"] * 2
    order = events[5]
    assert isinstance(order, OrderEvent)
    assert [(line.item_id, line.quantity) for line in order.items] == [("i1", 2), ("i2", 1)]
    ids = [e.event_id for e in events if e is not None]
    assert len(set(ids)) == 7
    assert ids[4] == ids[0] + "-2"
    assert [e.event_id for e in (r.event for r in read_events(str(path))) if e] == ids


def test_the_older_columns_tsv_and_flat_jsonl_rows_read_as_events(tmp_path: Path) -> None:
    older = tmp_path / "older.tsv"
    older.write_text(
        "user_id\titem_id\ttimestamp\tevent_type\nu1\ti1\t1767225600\tview\n"
        "u1\ti2\t2026-01-01T00:00:01\tpurchase\n"
    )
    flat = tmp_path / "flat.jsonl"
    flat.write_text(
        '{"user_id": "u1", "item_id": "i1", "timestamp": 1767225600, "event_type": "view"}\n'
        '{"type": "order", "user_id": "u1", "item_id": "i2", "ts": 1767225601000}\n'
    )
    for path in (older, flat):
        events = [r.event for r in read_events(str(path))]
        assert isinstance(events[0], ClickEvent)
        assert events[0].ts == datetime(2026, 1, 1, tzinfo=UTC)
        assert isinstance(events[1], OrderEvent)
        assert [line.item_id for line in events[1].items] == ["i2"]
