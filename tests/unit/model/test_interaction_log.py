"""Event files as learning reads them: CSV, TSV and JSONL; epoch s, epoch ms and ISO 8601;
the older column names; orders as rows or with items; errors name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.interaction import Interaction
from model.interaction_log import (
    InteractionLogError,
    parse_timestamp,
    read_interactions,
    write_interactions,
)


def test_timestamps_in_seconds_milliseconds_and_iso_agree() -> None:
    expected = 1_767_225_600_000
    assert parse_timestamp("1767225600") == expected
    assert parse_timestamp(1_767_225_600.0) == expected
    assert parse_timestamp("1767225600000") == expected
    assert parse_timestamp("2026-01-01T00:00:00Z") == expected
    assert parse_timestamp("2026-01-01T01:00:00+01:00") == expected
    assert parse_timestamp("2026-01-01 00:00:00") == expected
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_timestamp("yesterday")
    with pytest.raises(ValueError, match="non-negative"):
        parse_timestamp("-5")


def test_csv_tsv_and_jsonl_read_the_same_interactions(tmp_path: Path) -> None:
    csv_file = tmp_path / "log.csv"
    csv_file.write_text(
        "user_id,item_id,timestamp,event_type,extra\nu1,i1,1767225600,click,x\n"
        "u1,i2,2026-01-01T00:00:01Z,purchase,y\n"
    )
    tsv_file = tmp_path / "log.tsv"
    tsv_file.write_text(
        "user_id\titem_id\ttimestamp\nu1\ti1\t1767225600000\nu1\ti2\t1767225601000\n"
    )
    jsonl_file = tmp_path / "log.jsonl"
    jsonl_file.write_text(
        '{"user_id": "u1", "item_id": "i1", "timestamp": 1767225600}\n\n'
        '{"user_id": "u1", "item_id": "i2", "timestamp": "2026-01-01T00:00:01Z",'
        ' "event_type": "order"}\n'
    )
    from_csv = list(read_interactions(csv_file))
    assert from_csv == [
        Interaction("u1", "i1", "click", 1_767_225_600_000),
        Interaction("u1", "i2", "order", 1_767_225_601_000),
    ]
    assert [(i.item_id, i.ts_ms) for i in read_interactions(tsv_file)] == [
        (i.item_id, i.ts_ms) for i in from_csv
    ]
    assert list(read_interactions(jsonl_file)) == from_csv


def test_a_written_log_reads_back_unchanged(tmp_path: Path) -> None:
    rows = [
        Interaction("u,1", 'i"2', "order", 1_700_000_000_005),
        Interaction("u2", "i3", "click", 1_700_000_000_009),
    ]
    assert write_interactions(rows, tmp_path / "out.csv") == 2
    assert list(read_interactions(tmp_path / "out.csv")) == rows


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.csv", "user,item,time\nu,i,1\n", "line 1: header .* lacks user_id, item_id"),
        ("b.csv", "user_id,item_id,timestamp\nu,i,1\nu,,2\n", "line 3: missing item_id"),
        ("c.csv", "user_id,item_id,timestamp,event_type\nu,i,1,hover\n", "line 2: type 'hover'"),
        ("d.jsonl", '{"user_id": "u", "item_id": "i", "timestamp": 1}\n[1]\n', "line 2:"),
        ("e.jsonl", '{"user_id": "u", "item_id": "i", "timestamp": "soon"}\n', "line 1:"),
    ],
)
def test_bad_lines_fail_with_their_line_number(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InteractionLogError, match=message):
        list(read_interactions(path))


def test_the_event_format_and_the_older_columns_read_alike(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text(
        "event_id,type,user_id,item_id,ts,quantity,category\n"
        "e1,click,u1,i1,1767225600000,,shoes\n"
        ",order,u1,i2,2026-01-01T00:00:01Z,2,\n"
    )
    older = tmp_path / "older.csv"
    older.write_text(
        "user_id,item_id,timestamp,event_type\nu1,i1,1767225600,view\nu1,i2,1767225601,purchase\n"
    )
    api = tmp_path / "api.jsonl"
    api.write_text(
        '{"event_id": "e1", "type": "click", "user_id": "u1", "item_id": "i1",'
        ' "ts": "2026-01-01T00:00:00Z"}\n'
        '{"type": "order", "user_id": "u1", "ts": 1767225601000, "order_id": "o1",'
        ' "items": [{"item_id": "i2", "quantity": 2}]}\n'
    )
    expected = [
        Interaction("u1", "i1", "click", 1_767_225_600_000),
        Interaction("u1", "i2", "order", 1_767_225_601_000, quantity=2),
    ]
    assert list(read_interactions(events)) == expected
    assert list(read_interactions(api)) == expected
    assert [(i.kind, i.ts_ms) for i in read_interactions(older)] == [
        (i.kind, i.ts_ms) for i in expected
    ]
