"""Events from a file into the topics: validated, paced, resumable (`recstream produce` and
`recstream replay --from-file`). Keys and event times are the events' own, and ingest is
idempotent on `event_id`, so replaying a file again changes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from kafka.producer.future import FutureRecordMetadata
from tqdm import tqdm

from store.vector_state import ItemMeta
from stream.config import Settings
from stream.events.files import read_events
from stream.events.producer import EventProducer
from stream.events.topics import ensure_topics
from stream.wiring import redis_client, retrying, vector_state


@dataclass
class ProduceSummary:
    """What a replay did: counts and the first rejections with line numbers."""

    sent: int = 0
    skipped: int = 0
    rejected: int = 0
    failed: int = 0
    items_described: int = 0  # items whose category/brand the file's item columns set
    reasons: list[str] = field(default_factory=list)

    def note(self, line: int, reason: str, limit: int = 50) -> None:
        if len(self.reasons) < limit:
            self.reasons.append(f"line {line}: {reason}")

    def render(self) -> str:
        out = [f"sent {self.sent}, rejected {self.rejected}, failed to deliver {self.failed}"]
        if self.skipped:
            out[0] += f", skipped {self.skipped} (replayed before, per the saved position)"
        if self.items_described:
            out[0] += f", {self.items_described} items' category/brand set from the file"
        out += [f"  {r}" for r in self.reasons]
        hidden = self.rejected + self.failed - len(self.reasons)
        if hidden > 0:
            out.append(f"  ... and {hidden} more")
        return "\n".join(out)


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast to send: `rate` events/s, or event-time gaps divided by `speedup`, or at once."""

    rate: float | None = None
    speedup: float | None = None

    def __post_init__(self) -> None:
        if self.rate is not None and self.speedup is not None:
            raise ValueError("give a rate or a speedup, not both")
        if (self.rate is not None and self.rate <= 0) or (
            self.speedup is not None and self.speedup <= 0
        ):
            raise ValueError("rate and speedup must be positive")

    def due_s(self, sent: int, first_ts_ms: int, ts_ms: int) -> float:
        """Seconds after the start at which event number `sent` (from 0) is due.

        >>> Pace(rate=100).due_s(50, 0, 0), Pace(speedup=60).due_s(1, 0, 120_000)
        (0.5, 2.0)
        """
        if self.rate is not None:
            return sent / self.rate
        if self.speedup is not None:
            return max(0.0, (ts_ms - first_ts_ms) / 1000 / self.speedup)
        return 0.0


class Position:
    """The last file line whose event the broker acknowledged, saved atomically."""

    def __init__(self, path: Path | None, source: str) -> None:
        self.path = path
        self.source = str(Path(source).resolve()) if source != "-" else "-"
        self.line = 0
        if path is not None and path.exists():
            saved = json.loads(path.read_text())
            if saved.get("file") != self.source:
                raise ValueError(f"{path} is the position of {saved.get('file')}, not {source}")
            self.line = int(saved["line"])

    def save(self, line: int) -> None:
        self.line = line
        if self.path is not None:
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps({"file": self.source, "line": line}))
            os.replace(partial, self.path)


def describe_items(settings: Settings, found: Mapping[str, Mapping[str, str]]) -> int:
    """Set the category and brand an event file gives its items, keeping the rest of their
    metadata (stock, tags, price); returns how many items changed."""

    async def write() -> int:
        client = redis_client(settings)
        state = vector_state(settings, client)
        try:
            known = await retrying(lambda: state.item_meta(list(found)))
            changed = 0
            for item_id, columns in found.items():
                meta = known.get(item_id, ItemMeta())
                merged = dataclasses.replace(
                    meta,
                    category=columns.get("category", meta.category),
                    brand=columns.get("brand", meta.brand),
                )
                if merged != meta or item_id not in known:
                    await retrying(partial(state.put_item_meta, item_id, merged))
                    changed += 1
            return changed
        finally:
            await client.aclose()

    return asyncio.run(write())


def replay_file(
    settings: Settings,
    path: str,
    *,
    pace: Pace | None = None,
    position: Path | None = None,
    dry_run: bool = False,
    progress: bool = True,
    save_every: int = 1_000,
) -> ProduceSummary:
    """Validate and send every event of a JSONL/CSV file (or stdin); invalid lines are
    reported by line number. With `position`, lines acknowledged in an earlier run are
    skipped and progress is saved every `save_every` events, so an interrupted replay
    resumes where it stopped."""
    pace = pace or Pace()
    saved = Position(position, path)
    summary = ProduceSummary()
    if not dry_run:
        ensure_topics(settings)
    pending: list[tuple[int, FutureRecordMetadata]] = []
    began = time.monotonic()
    first_ts: int | None = None
    producer = None if dry_run else EventProducer(settings)

    described: dict[str, dict[str, str]] = {}

    first_failed: int | None = None  # the saved position never passes an undelivered line

    def settle(last_line: int) -> None:
        """Wait for the broker; move the saved position only past delivered events, and
        never past the first line whose delivery failed (a resume sends it again)."""
        nonlocal first_failed
        if producer is None:
            return
        if described:
            summary.items_described += describe_items(settings, described)
            described.clear()
        producer.flush()
        for line, future in pending:
            try:
                future.get(timeout=30)
                summary.sent += 1
            except Exception as error:
                summary.failed += 1
                summary.note(line, f"delivery failed: {error}")
                first_failed = line if first_failed is None else min(first_failed, line)
        pending.clear()
        safe = last_line if first_failed is None else min(last_line, first_failed - 1)
        if safe > saved.line:
            saved.save(safe)

    try:
        last = 0
        records = tqdm(
            read_events(path), desc="replay", unit="ev", disable=not progress, file=sys.stderr
        )
        for record in records:
            if record.line <= saved.line:
                summary.skipped += record.event is not None
                continue
            if record.event is None:
                summary.rejected += 1
                summary.note(record.line, record.error or "invalid")
                continue
            if producer is None:
                summary.sent += 1
                continue
            ts_ms = int(record.event.ts.timestamp() * 1000)
            first_ts = ts_ms if first_ts is None else first_ts
            due = pace.due_s(summary.sent + len(pending), first_ts, ts_ms)
            wait = due - (time.monotonic() - began)
            if wait > 0:
                time.sleep(wait)
            pending.append((record.line, producer.send(record.event)))
            described.update(record.items)
            last = record.line
            if len(pending) >= save_every:
                settle(last)
        settle(last)
    finally:
        if producer is not None:
            producer.close()
    return summary
