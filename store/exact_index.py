"""`VectorIndex` in plain numpy: exact inner-product top-k over an in-memory matrix. No FAISS:
the reference the FAISS indexes are checked against, and enough for small catalogues."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from store.vector_index import (
    IndexStamp,
    Neighbours,
    StampedIndex,
    VectorIndexError,
    top_k_of,
    write_atomic,
)


class ExactVectorIndex(StampedIndex):
    """Rows of one float32 matrix, an id per row; a removed row is filled by the last one.

    >>> index = ExactVectorIndex(dim=2)
    >>> index.upsert(["a", "b"], [[1.0, 0.0], [0.0, 1.0]])
    >>> index.search([[0.9, 0.1]], k=1)[0].ids
    ['a']
    """

    searches_quickly = False  # a scan of the whole matrix: worth a thread of its own

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._matrix = np.empty((0, dim), dtype=np.float32)
        self._ids: list[str] = []
        self._row_of: dict[str, int] = {}

    @property
    def size(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        with self._lock.reading():
            return list(self._ids)

    def contains(self, item_id: str) -> bool:
        return item_id in self._row_of

    def _upsert(self, latest: dict[str, int], matrix: npt.NDArray[np.float32]) -> None:
        new = [i for i in latest if i not in self._row_of]
        for item_id, row in latest.items():
            if item_id in self._row_of:
                self._matrix[self._row_of[item_id]] = matrix[row]
        if new:
            start = len(self._ids)
            self._matrix = np.concatenate([self._matrix, matrix[[latest[i] for i in new]]])
            self._ids += new
            self._row_of.update({item_id: start + n for n, item_id in enumerate(new)})

    def _remove(self, ids: list[str]) -> int:
        """A removed row is filled by the last one."""
        removed = 0
        for item_id in ids:
            row = self._row_of.pop(item_id, None)
            if row is None:
                continue
            removed += 1
            last = len(self._ids) - 1
            if row != last:
                self._matrix[row] = self._matrix[last]
                self._ids[row] = self._ids[last]
                self._row_of[self._ids[row]] = row
            self._ids.pop()
            self._matrix = self._matrix[:last]
        return removed

    def _search(self, matrix: npt.NDArray[np.float32], k: int) -> list[Neighbours]:
        """Ties: the lower row first."""
        return top_k_of(matrix, k, self._ids, self._matrix)

    def _vectors_of(self, ids: list[str]) -> npt.NDArray[np.float32]:
        return self._matrix[[self._row_of[i] for i in ids]].reshape(len(ids), self.dim)

    def snapshot(self, directory: Path) -> None:
        """The matrix (numpy format, no pickle) and the ids, each replaced atomically."""
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock.reading():
            buffer = io.BytesIO()
            np.save(buffer, self._matrix, allow_pickle=False)
            meta = {
                "dim": self.dim,
                "kind": "exact",
                "ids": self._ids,
                "version": self._stamp.writes,
                "model_version": self._stamp.model_version,
            }
        write_atomic(directory / "vectors.npy", buffer.getvalue())
        write_atomic(directory / "index.json", json.dumps(meta).encode())

    def restore(self, directory: Path) -> None:
        """Replace this index with a snapshot written by `snapshot`."""
        try:
            meta = json.loads((directory / "index.json").read_bytes())
            matrix = np.load(directory / "vectors.npy", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise VectorIndexError(f"cannot read snapshot in {directory}: {error}") from None
        if meta.get("kind") != "exact" or meta["dim"] != self.dim:
            raise VectorIndexError(
                f"snapshot is {meta.get('kind', meta.get('factory'))} dim {meta['dim']}, "
                f"index is exact dim {self.dim}"
            )
        with self._lock.writing():
            self._matrix = np.ascontiguousarray(matrix, dtype=np.float32)
            self._ids = [str(i) for i in meta["ids"]]
            self._row_of = {item_id: row for row, item_id in enumerate(self._ids)}
            self._stamp = IndexStamp(int(meta["version"]), meta.get("model_version"))
