"""Read events from JSONL, CSV or Parquet files (or stdin), keeping line numbers for errors.

The one event file format (`model.interaction_log` says it whole): CSV and Parquet columns
`[event_id,]type,user_id,item_id,ts[,quantity,price,order_id,session_id]`, and optionally the
item's `category` and `brand` (item metadata, not part of the event: `FileRecord.items`). A
row holds a click or one order line; consecutive order rows with the same `event_id` (else
the same `order_id`, else the same user and time) form one order. A JSONL line is an event as
the API takes it, or a row. Without `event_id` one is derived from the event's content (and
how many times the same content came before in the file), so sending a file twice is
idempotent. A Parquet file's "line" is its row number, from 1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from model.interaction_log import ITEM_COLUMNS, canonical_row
from stream.events.schema import ClickEvent, EventError, OrderEvent, validate_event


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One event read from a file: `event` or, when it is invalid, `error`."""

    line: int
    event: ClickEvent | OrderEvent | None
    error: str | None = None
    items: dict[str, dict[str, str]] = field(default_factory=dict)  # item id -> ITEM_COLUMNS


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


class _DerivedIds:
    """Event ids for a file's events that have none: a digest of the event's content and of
    how many times that content came before in the file (two identical clicks in a log are
    two clicks; the same file sent again gives the same ids)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def fill(self, document: Any) -> Any:
        if not isinstance(document, dict) or document.get("event_id") not in (None, ""):
            return document
        content = {k: v for k, v in document.items() if k != "event_id"}
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        count = self._seen[digest] = self._seen.get(digest, 0) + 1
        event_id = f"f-{digest}" + (f"-{count}" if count > 1 else "")
        if content.get("type") == "order" and not content.get("order_id"):
            content["order_id"] = event_id  # a file's order may leave it out too
        return {**content, "event_id": event_id}


def _validated(line: int, document: Any, ids: _DerivedIds) -> FileRecord:
    try:
        return FileRecord(line, validate_event(ids.fill(document)))
    except EventError as error:
        return FileRecord(line, None, error.reason)


def _flat_event(document: dict[str, Any]) -> dict[str, Any]:
    """A JSONL row (`timestamp`, `event_type`, an order's `item_id`) as an event document."""
    if "items" in document:
        return document
    row = canonical_row(document)
    if row["type"] == "order" and "item_id" in row:
        line = {k: row.pop(k) for k in ("item_id", "quantity", "price") if k in row}
        row["items"] = [line]
    return row


def read_jsonl(stream: Iterable[str]) -> Iterator[FileRecord]:
    ids = _DerivedIds()
    for number, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as error:
            yield FileRecord(number, None, f"not valid JSON: {error}")
            continue
        if isinstance(document, dict):
            try:
                document = _flat_event(document)
            except ValueError as error:
                yield FileRecord(number, None, str(error))
                continue
        yield _validated(number, document, ids)


def _csv_value(column: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
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


def _csv_document(first_line: int, rows: list[dict[str, Any]], ids: _DerivedIds) -> FileRecord:
    items = {
        row["item_id"]: {c: row[c] for c in ITEM_COLUMNS if row.get(c)}
        for row in rows
        if row.get("item_id") and any(row.get(c) for c in ITEM_COLUMNS)
    }
    rows = [{k: v for k, v in row.items() if k not in ITEM_COLUMNS} for row in rows]
    record = _event_document(first_line, rows, ids)
    return replace(record, items=items) if record.event is not None else record


def _event_document(first_line: int, rows: list[dict[str, Any]], ids: _DerivedIds) -> FileRecord:
    head = {k: _csv_value(k, v) for k, v in rows[0].items()}
    if head.get("type") != "order":
        if len(rows) > 1:
            return FileRecord(first_line, None, "repeated event_id on consecutive rows")
        return _validated(first_line, head, ids)
    lines = []
    for row in rows:
        line = {k: _csv_value(k, row[k]) for k in ("item_id", "quantity", "price") if row.get(k)}
        lines.append(line)
    document = {k: v for k, v in head.items() if k not in ("item_id", "quantity", "price")}
    document["items"] = lines
    return _validated(first_line, document, ids)


def read_csv(stream: Iterable[str], delimiter: str = ",") -> Iterator[FileRecord]:
    reader = csv.DictReader(stream, delimiter=delimiter)
    yield from _grouped((reader.line_num, row) for row in reader)


def _group_key(row: dict[str, Any]) -> tuple[Any, ...] | None:
    """Rows with equal keys, one after another, are one event: its `event_id`, else (an
    order's rows only) its `order_id`, else its user and time; a click without an id is
    alone."""
    if row.get("event_id"):
        return ("event", row["event_id"])
    if row.get("type") != "order":
        return None
    if row.get("order_id"):
        return ("order", row["order_id"])
    return ("order", row.get("user_id"), row.get("ts"))


def _grouped(rows: Iterable[tuple[int, dict[str, str]]]) -> Iterator[FileRecord]:
    """Rows with their line numbers into events: an order's consecutive rows make one."""
    ids = _DerivedIds()
    group: list[dict[str, Any]] = []
    group_line, key = 0, None
    for number, raw in rows:
        try:
            row = canonical_row(raw)
        except ValueError as error:
            if group:
                yield _csv_document(group_line, group, ids)
                group, key = [], None
            yield FileRecord(number, None, str(error))
            continue
        if group and key is not None and _group_key(row) == key:
            group.append(row)
            continue
        if group:
            yield _csv_document(group_line, group, ids)
        group, group_line, key = [row], number, _group_key(row)
    if group:
        yield _csv_document(group_line, group, ids)


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
        if detect_format(path, first) == "jsonl":
            yield from read_jsonl(lines)
        else:
            yield from read_csv(lines, "\t" if "\t" in first else ",")
