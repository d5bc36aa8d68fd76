"""Read events from JSONL or CSV files (or stdin), keeping line numbers for error reports.

CSV columns: `event_id,type,user_id,ts[,item_id,order_id,quantity,price,session_id]`. A CSV
order row holds one order line; consecutive rows with the same `event_id` form one order.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from stream.events import ClickEvent, EventError, OrderEvent, validate_event


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One event read from a file: `event` or, when it is invalid, `error`."""

    line: int
    event: ClickEvent | OrderEvent | None
    error: str | None = None


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
    group: list[dict[str, str]] = []
    group_line = 0
    for row in reader:
        number = reader.line_num
        if group and row.get("event_id") == group[0].get("event_id"):
            group.append(row)
            continue
        if group:
            yield _csv_document(group_line, group)
        group, group_line = [row], number
    if group:
        yield _csv_document(group_line, group)


def read_events(path: str) -> Iterator[FileRecord]:
    """Every event of a JSONL or CSV file (or stdin with `-`), valid or not, in file order."""
    with open_source(path) as stream:
        first = stream.readline()
        lines = itertools.chain([first], stream)
        yield from (read_csv(lines) if detect_format(path, first) == "csv" else read_jsonl(lines))
