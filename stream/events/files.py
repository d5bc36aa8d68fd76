"""Read events from JSONL, CSV or Parquet files (or stdin), keeping line numbers for errors.

CSV and Parquet columns: `event_id,type,user_id,ts[,item_id,order_id,quantity,price,
session_id]`, and optionally the item's `category` and `brand` (item metadata, not part of the
event: `FileRecord.items`). A row holds a click or one order line; consecutive rows with the
same `event_id` form one order. A Parquet file's "line" is its row number, from 1.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from stream.events.schema import ClickEvent, EventError, OrderEvent, validate_event


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One event read from a file: `event` or, when it is invalid, `error`."""

    line: int
    event: ClickEvent | OrderEvent | None
    error: str | None = None
    items: dict[str, dict[str, str]] = field(default_factory=dict)  # item id -> ITEM_COLUMNS


ITEM_COLUMNS = ("category", "brand")  # optional per-row item metadata in CSV and Parquet


def open_source(path: str) -> IO[str]:
    """A text stream for `path`; `-` is stdin."""
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    return Path(path).open(encoding="utf-8", errors="replace", newline="")


def detect_format(path: str, first_line: str) -> str:
    """'csv' or 'jsonl', by extension, else by the first line."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    return "jsonl" if first_line.lstrip().startswith("{") else "csv"


def _validated(line: int, document: Any) -> FileRecord:
    try:
        return FileRecord(line, validate_event(document))
    except EventError as error:
        return FileRecord(line, None, error.reason)


def read_jsonl(stream: Iterable[str]) -> Iterator[FileRecord]:
    for number, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as error:
            yield FileRecord(number, None, f"not valid JSON: {error}")
            continue
        yield _validated(number, document)


def _csv_value(column: str, value: str) -> Any:
    if column == "ts" and value.isdigit():
        return int(value)
    if column == "quantity":
        return int(value) if value.lstrip("-").isdigit() else value
    if column == "price":
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _csv_document(first_line: int, rows: list[dict[str, str]]) -> FileRecord:
    items = {
        row["item_id"]: {c: row[c] for c in ITEM_COLUMNS if row.get(c)}
        for row in rows
        if row.get("item_id") and any(row.get(c) for c in ITEM_COLUMNS)
    }
    rows = [{k: v for k, v in row.items() if k not in ITEM_COLUMNS} for row in rows]
    record = _event_document(first_line, rows)
    return replace(record, items=items) if record.event is not None else record


def _event_document(first_line: int, rows: list[dict[str, str]]) -> FileRecord:
    head = {k: _csv_value(k, v) for k, v in rows[0].items() if k and v not in ("", None)}
    if head.get("type") != "order":
        if len(rows) > 1:
            return FileRecord(first_line, None, "repeated event_id on consecutive rows")
        return _validated(first_line, head)
    lines = []
    for row in rows:
        line = {k: _csv_value(k, row[k]) for k in ("item_id", "quantity", "price") if row.get(k)}
        lines.append(line)
    document = {k: v for k, v in head.items() if k not in ("item_id", "quantity", "price")}
    document["items"] = lines
    return _validated(first_line, document)


def read_csv(stream: Iterable[str]) -> Iterator[FileRecord]:
    reader = csv.DictReader(stream)
    yield from _grouped((reader.line_num, row) for row in reader)


def _grouped(rows: Iterable[tuple[int, dict[str, str]]]) -> Iterator[FileRecord]:
    """Rows with their line numbers into events: an order's consecutive rows make one."""
    group: list[dict[str, str]] = []
    group_line = 0
    for number, row in rows:
        if group and row.get("event_id") == group[0].get("event_id"):
            group.append(row)
            continue
        if group:
            yield _csv_document(group_line, group)
        group, group_line = [row], number
    if group:
        yield _csv_document(group_line, group)


def _cell(value: object) -> str:
    """A Parquet value as the CSV reader would see it."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def read_parquet(path: str, batch_rows: int = 65_536) -> Iterator[FileRecord]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("Parquet needs pyarrow: pip install 'recstream[parquet]'") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises its own error types for unreadable files
        raise ValueError(f"{path} is not a readable Parquet file: {error}") from None

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        number = 0
        for batch in table.iter_batches(batch_size=batch_rows):
            for row in batch.to_pylist():
                number += 1
                yield number, {str(k): _cell(v) for k, v in row.items()}

    yield from _grouped(rows())


def read_events(path: str) -> Iterator[FileRecord]:
    """Every event of a JSONL, CSV or Parquet file (or stdin with `-`), valid or not, in file
    order."""
    if Path(path).suffix.lower() == ".parquet":
        yield from read_parquet(path)
        return
    with open_source(path) as stream:
        first = stream.readline()
        lines = itertools.chain([first], stream)
        yield from (read_csv(lines) if detect_format(path, first) == "csv" else read_jsonl(lines))
