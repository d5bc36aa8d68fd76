"""Decoded log records spilled to disk, one file per partition, read back merged in the one
event-time order (`in_event_order`): a rebuild holds a read buffer, not the whole log."""

from __future__ import annotations

import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from stream.events.handlers import Decoded, DecodedRecord, merged_in_event_order

FLUSH_EVERY = 1_000  # records buffered per partition before they go to its file


class EventSpool:
    """Append decoded records (in each partition's order), then read them all back in event
    order, as often as needed. Files live in a temporary directory under `parent`, removed
    by `close`. Only this process writes and reads them (pickle)."""

    def __init__(self, parent: Path) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="spool-", dir=parent))
        self._paths: dict[str, Path] = {}
        self._buffers: dict[str, Decoded] = {}
        self.records = 0

    def __enter__(self) -> EventSpool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def buffered(self) -> int:
        """Records held in memory now (at most `FLUSH_EVERY` a partition)."""
        return sum(len(b) for b in self._buffers.values())

    def extend(self, batch: Decoded) -> None:
        """Add records; each partition's records must come in its own order."""
        for record in batch:
            key = record[0].partition_key
            buffer = self._buffers.setdefault(key, [])
            buffer.append(record)
            if len(buffer) >= FLUSH_EVERY:
                self._flush(key)
        self.records += len(batch)

    def in_event_order(self) -> Iterator[DecodedRecord]:
        """Every record so far, merged across partitions by (event time, event id), each
        partition's own order kept: the order `in_event_order` gives in memory."""
        for key in list(self._buffers):
            self._flush(key)
        return merged_in_event_order([self._read(self._paths[k]) for k in sorted(self._paths)])

    def close(self) -> None:
        self._paths.clear()
        self._buffers.clear()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _flush(self, key: str) -> None:
        buffer = self._buffers.get(key)
        if not buffer:
            return
        path = self._paths.setdefault(key, self._dir / f"{len(self._paths)}.pickle")
        with path.open("ab") as file:
            pickle.dump(buffer, file, protocol=pickle.HIGHEST_PROTOCOL)
        buffer.clear()

    @staticmethod
    def _read(path: Path) -> Iterator[DecodedRecord]:
        with path.open("rb") as file:
            while True:
                try:
                    chunk: Decoded = pickle.load(file)
                except EOFError:
                    return
                yield from chunk
