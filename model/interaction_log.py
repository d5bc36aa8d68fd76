"""Interaction logs: CSV/TSV or JSONL with user_id, item_id, timestamp[, event_type]."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from model.errors import ModelError
from model.interaction import Interaction, InteractionKind

REQUIRED_COLUMNS = ("user_id", "item_id", "timestamp")
_KINDS: dict[str, InteractionKind] = {
    "click": "click",
    "view": "click",
    "detail_view": "click",
    "add_to_cart": "click",
    "cart": "click",
    "order": "order",
    "purchase": "order",
    "buy": "order",
    "transaction": "order",
}
_MS_THRESHOLD = 100_000_000_000  # epoch seconds stay below this until the year 5138


class InteractionLogError(ModelError, ValueError):
    """A log line that cannot become an interaction; the message names the line."""


def parse_timestamp(value: object) -> int:
    """Epoch milliseconds from epoch seconds, epoch milliseconds or ISO 8601 (UTC if naive).

    >>> parse_timestamp("881250949"), parse_timestamp(881250949123)
    (881250949000, 881250949123)
    >>> parse_timestamp("2026-01-01T00:00:00Z")
    1767225600000
    """
    if isinstance(value, bool):
        raise ValueError(f"timestamp must be a number or ISO 8601 text, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"timestamp {text!r} is not epoch s/ms or ISO 8601") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return int(moment.timestamp() * 1000)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"timestamp {value!r} is not a non-negative finite number")
    return int(number) if number >= _MS_THRESHOLD else round(number * 1000)


def interaction_from_row(row: Mapping[str, Any]) -> Interaction:
    """One record with user_id, item_id, timestamp and an optional event_type."""
    missing = [c for c in REQUIRED_COLUMNS if row.get(c) in (None, "")]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    raw_kind = str(row.get("event_type") or "click").strip().lower()
    kind = _KINDS.get(raw_kind)
    if kind is None:
        raise ValueError(f"event_type {raw_kind!r} is not one of {', '.join(sorted(_KINDS))}")
    return Interaction(
        user_id=str(row["user_id"]).strip(),
        item_id=str(row["item_id"]).strip(),
        kind=kind,
        ts_ms=parse_timestamp(row["timestamp"]),
    )


def read_interactions(path: str | Path) -> Iterator[Interaction]:
    """Every interaction of a .jsonl/.json file or a CSV/TSV file with a header row."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as handle:
        first = handle.readline()
        handle.seek(0)
        if path.suffix in (".jsonl", ".json", ".ndjson") or first.lstrip().startswith("{"):
            yield from _read_jsonl(handle)
        else:
            yield from _read_csv(handle, delimiter="\t" if "\t" in first else ",")


def _read_jsonl(handle: IO[str]) -> Iterator[Interaction]:
    for line_number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict):
                raise ValueError("a line must be a JSON object")
            yield interaction_from_row(doc)
        except ValueError as error:
            raise InteractionLogError(f"line {line_number}: {error}") from None


def _read_csv(handle: IO[str], delimiter: str) -> Iterator[Interaction]:
    reader = csv.DictReader(handle, delimiter=delimiter)
    header = reader.fieldnames or []
    absent = [c for c in REQUIRED_COLUMNS if c not in header]
    if absent:
        raise InteractionLogError(
            f"line 1: header {header} lacks {', '.join(absent)}; "
            f"columns must be {','.join(REQUIRED_COLUMNS)}[,event_type]"
        )
    for row in reader:
        try:
            yield interaction_from_row(row)
        except ValueError as error:
            raise InteractionLogError(f"line {reader.line_num}: {error}") from None


def write_interactions(interactions: Iterable[Interaction], path: str | Path) -> int:
    """Write a CSV in the format `read_interactions` takes (timestamps in epoch ms)."""
    count = 0
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*REQUIRED_COLUMNS, "event_type"])
        for i in interactions:
            writer.writerow([i.user_id, i.item_id, i.ts_ms, i.kind])
            count += 1
    return count


ItemMetadata = dict[str, dict[str, str]]


def read_items(path: str | Path) -> ItemMetadata:
    """Item metadata from a CSV with an `item_id` column and any others (category, brand,
    price, ...): item id -> {column: value}, empty values left out."""
    with Path(path).open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if "item_id" not in (reader.fieldnames or []):
            raise InteractionLogError(f"line 1: {path} has no item_id column")
        return {
            row["item_id"].strip(): {k: v for k, v in row.items() if k != "item_id" and v}
            for row in reader
            if row.get("item_id")
        }


def write_items(items: Iterable[tuple[str, Mapping[str, str]]], path: str | Path) -> int:
    """Write item metadata as `read_items` takes it; the columns are the first item's keys."""
    count = 0
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        writer: csv.DictWriter[str] | None = None
        for item_id, features in items:
            if writer is None:
                writer = csv.DictWriter(handle, ["item_id", *features])
                writer.writeheader()
            writer.writerow({"item_id": item_id, **features})
            count += 1
    return count
