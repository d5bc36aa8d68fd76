"""Which of a catalogue's item vectors changed since the last one seen, and which ids left:
what a publish writes to Redis and what the trainer's tower index upserts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

# rows compared at a time: one [rows, dim] comparison of 1M rows made a 64 MB temporary,
# new (and paid in page faults) at every publish
_CHUNK = 1 << 14


class VectorChanges:
    """The last catalogue seen (ids and their vectors, held as given: pass a matrix nobody
    writes to afterwards), to compare the next one with."""

    def __init__(self, dim: int) -> None:
        self._ids: Sequence[str] = []
        self._row_of: dict[str, int] | None = {}
        self._vectors = np.empty((0, dim), dtype=np.float32)

    def since(
        self, ids: Sequence[str], vectors: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.bool_], list[str]]:
        """Whether each of `ids` is new or its vector differs from the last seen, and the ids
        seen last that `ids` no longer holds."""
        seen = len(self._ids)
        if len(ids) >= seen and ids[:seen] == self._ids:  # the same or appended (compared in C)
            changed = np.ones(len(ids), dtype=bool)
            for start in range(0, seen, _CHUNK):
                part = slice(start, min(start + _CHUNK, seen))
                np.any(self._vectors[part] != vectors[part], axis=1, out=changed[part])
            return changed, []
        row_of = self._rows()
        rows = np.fromiter((row_of.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        changed = rows < 0
        known = ~changed
        changed[known] = (self._vectors[rows[known]] != vectors[known]).any(axis=1)
        current = set(ids)
        return changed, [i for i in self._ids if i not in current]

    def remember(self, ids: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        """`ids` and `vectors` are what the next `since` compares with."""
        if ids is not self._ids:
            self._row_of = None  # built when first needed: an unchanged id list never needs it
        self._ids, self._vectors = ids, vectors

    def forget(self) -> None:
        """The next `since` finds every vector new."""
        self.remember([], self._vectors[:0])

    def _rows(self) -> dict[str, int]:
        if self._row_of is None:
            self._row_of = {item_id: row for row, item_id in enumerate(self._ids)}
        return self._row_of
