"""Event files as learning reads them: the one file format of `recstream data`, `produce`,
`replay` and `eval` (CSV/TSV with a header, or JSONL).

A row: `[event_id,] type, user_id, item_id, ts[, quantity, price, order_id, session_id,
category, brand]`. `ts` is epoch seconds, epoch milliseconds or ISO 8601 (UTC when it has no
offset); `type` is click or order (view, add_to_cart, ... read as click; purchase, buy, ...
as order; missing: click). `timestamp` and `event_type` are read as `ts` and `type`. A JSONL
line is such a row or an event as the API takes it (an order with `items`). `event_id` is
optional: the wire derives one from the row when absent (stream.events.files).
"""

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

REQUIRED_COLUMNS = ("user_id", "item_id", "ts")
ALIASES = {"timestamp": "ts", "event_type": "type"}  # older column names, read the same
KINDS: dict[str, InteractionKind] = {
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


def canonical_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` in the file format's own terms: aliases renamed, `type` click or order, `ts` in
    epoch milliseconds, empty cells left out. Raises ValueError naming a bad value."""
    out = {ALIASES.get(k, k): v for k, v in row.items() if k and v not in ("", None)}
    raw_kind = str(out.get("type") or "click").strip().lower()
    kind = KINDS.get(raw_kind)
    if kind is None:
        raise ValueError(f"type {raw_kind!r} is not one of {', '.join(sorted(KINDS))}")
    out["type"] = kind
    if "ts" in out:
        try:
            out["ts"] = parse_timestamp(out["ts"])
        except ValueError as error:
            raise ValueError(f"ts: {error}") from None
    return out


def interactions_of(row: Mapping[str, Any]) -> Iterator[Interaction]:
    """The interactions of one row (one) or one order event with `items` (one per line)."""
    lines = row.get("items")
    if isinstance(lines, list):
        head = canonical_row({k: v for k, v in row.items() if k != "items"})
        for line in lines:
            if not isinstance(line, dict):
                raise ValueError("an order's items must be objects")
            yield interaction_from_row({**head, **line})
        return
    yield interaction_from_row(row)


def interaction_from_row(row: Mapping[str, Any]) -> Interaction:
    """One row with user_id, item_id, ts (or timestamp), optional type and quantity."""
    canonical = canonical_row(row)
    missing = [c for c in REQUIRED_COLUMNS if c not in canonical]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    quantity = canonical.get("quantity", 1)
    try:
        quantity = int(quantity)
    except (TypeError, ValueError):
        raise ValueError(f"quantity {quantity!r} is not a whole number") from None
    return Interaction(
        user_id=str(canonical["user_id"]).strip(),
        item_id=str(canonical["item_id"]).strip(),
        kind=canonical["type"],
        ts_ms=canonical["ts"],
        quantity=max(quantity, 1),
    )


ITEM_COLUMNS = ("category", "brand")  # a row may describe its item too
ItemMetadata = dict[str, dict[str, str]]


def read_interactions(path: str | Path) -> Iterator[Interaction]:
    """Every interaction of a .jsonl/.json file or a CSV/TSV file with a header row."""
    for interaction, _ in _read_rows(path):
        yield interaction


def read_log(path: str | Path) -> tuple[list[Interaction], ItemMetadata]:
    """Every interaction of an event file, and what its rows say of their items (the
    `category` and `brand` columns; the last value given wins)."""
    interactions: list[Interaction] = []
    items: ItemMetadata = {}
    for interaction, row in _read_rows(path):
        interactions.append(interaction)
        described = {c: str(row[c]) for c in ITEM_COLUMNS if row.get(c) not in (None, "")}
        if described:
            items.setdefault(interaction.item_id, {}).update(described)
    return interactions, items


def _read_rows(path: str | Path) -> Iterator[tuple[Interaction, Mapping[str, Any]]]:
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as handle:
        first = handle.readline()
        handle.seek(0)
        if path.suffix in (".jsonl", ".json", ".ndjson") or first.lstrip().startswith("{"):
            yield from _read_jsonl(handle)
        else:
            yield from _read_csv(handle, delimiter="\t" if "\t" in first else ",")


def _read_jsonl(handle: IO[str]) -> Iterator[tuple[Interaction, Mapping[str, Any]]]:
    for line_number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict):
                raise ValueError("a line must be a JSON object")
            found = list(interactions_of(doc))
        except ValueError as error:
            raise InteractionLogError(f"line {line_number}: {error}") from None
        for interaction in found:
            yield interaction, doc


def _read_csv(handle: IO[str], delimiter: str) -> Iterator[tuple[Interaction, Mapping[str, Any]]]:
    reader = csv.DictReader(handle, delimiter=delimiter)
    header = [ALIASES.get(c, c) for c in reader.fieldnames or []]
    absent = [c for c in REQUIRED_COLUMNS if c not in header]
    if absent:
        raise InteractionLogError(
            f"line 1: header {reader.fieldnames} lacks {', '.join(absent)}; columns are "
            "[event_id,]type,user_id,item_id,ts[,quantity,price,order_id,category,brand]"
        )
    for row in reader:
        try:
            yield interaction_from_row(row), row
        except ValueError as error:
            raise InteractionLogError(f"line {reader.line_num}: {error}") from None


WRITTEN_COLUMNS = ("type", "user_id", "item_id", "ts", "quantity")


def write_interactions(interactions: Iterable[Interaction], path: str | Path | IO[str]) -> int:
    """Write the event file format (epoch ms; an order's lines on consecutive rows with one
    user and time, which read as one order) to `path` or an open text stream."""
    if not isinstance(path, str | Path):
        return _write_rows(interactions, path)
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        return _write_rows(interactions, handle)


def _write_rows(interactions: Iterable[Interaction], handle: IO[str]) -> int:
    count = 0
    writer = csv.writer(handle)
    writer.writerow(WRITTEN_COLUMNS)
    for i in interactions:
        quantity = i.quantity if i.kind == "order" else ""
        writer.writerow([i.kind, i.user_id, i.item_id, i.ts_ms, quantity])
        count += 1
    return count


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
