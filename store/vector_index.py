"""The vector-index role: upsert / remove / search / snapshot / restore by string item id."""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from store.errors import StoreError


class VectorIndexError(StoreError, ValueError):
    """Bad vectors, ids or snapshots given to an index."""


@dataclass(frozen=True, slots=True)
class Neighbours:
    """Best-first hits of one query: item ids and inner-product scores."""

    ids: list[str]
    scores: list[float]


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting_writers = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and not self._waiting_writers)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            self._cond.wait_for(lambda: not self._writing and not self._readers)
            self._waiting_writers -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


@dataclass(frozen=True, slots=True)
class IndexStamp:
    """How many writes an index has had, and the model version its vectors come from."""

    writes: int
    model_version: int | None

    def after_write(self, model_version: int | None) -> IndexStamp:
        """The stamp after one more write; a new model version, if given, replaces the old."""
        tag = self.model_version if model_version is None else model_version
        return IndexStamp(self.writes + 1, tag)


class VectorIndex(Protocol):
    """Inner-product top-k over item vectors by string id; concurrent searches, exclusive
    writes. What `Retriever`, `IndexFollower` and an API replica take."""

    @property
    def dim(self) -> int: ...

    @property
    def size(self) -> int:
        """Items currently searchable."""

    @property
    def version(self) -> int:
        """Grows with every write; lets callers tell two states of the index apart."""

    @property
    def stamp(self) -> IndexStamp:
        """Write count and model version, read together."""

    @property
    def searches_quickly(self) -> bool:
        """Whether one search is so quick that handing it to a thread costs more."""

    def ids(self) -> list[str]: ...

    def contains(self, item_id: str) -> bool: ...

    def upsert(
        self,
        ids: Sequence[str],
        vectors: npt.ArrayLike,
        model_version: int | None = None,
        *,
        removing: Sequence[str] = (),
    ) -> None: ...

    def remove(self, ids: Sequence[str]) -> int: ...

    def search(
        self, queries: npt.ArrayLike, k: int, among: Collection[str] | None = None
    ) -> list[Neighbours]:
        """Top-`k` per query; with `among`, exactly the top-`k` of those items (a filter's
        candidates: an exact scan of their vectors, whatever the index type)."""
        ...

    def vectors(self, ids: Sequence[str]) -> npt.NDArray[np.float32]: ...

    def snapshot(self, directory: Path) -> None: ...

    def restore(self, directory: Path) -> None: ...


def as_matrix(vectors: npt.ArrayLike, dim: int) -> npt.NDArray[np.float32]:
    """Coerce to a C-contiguous float32 [n, dim] matrix, or raise `VectorIndexError`."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise VectorIndexError(f"expected vectors of shape [n, {dim}], got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise VectorIndexError("vectors must be finite (no NaN or inf)")
    return matrix


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step (a reader sees the old file or the new one)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def upsert_rows(
    ids: Sequence[str], vectors: npt.ArrayLike, dim: int
) -> tuple[npt.NDArray[np.float32], dict[str, int]]:
    """An upsert's vectors as a [n, dim] float32 matrix, and the row that wins for each distinct
    id (the last one); raises `VectorIndexError` for bad vectors or a count mismatch."""
    matrix = np.empty((0, dim), dtype=np.float32) if len(ids) == 0 else as_matrix(vectors, dim)
    if len(ids) != len(matrix):
        raise VectorIndexError(f"{len(ids)} ids for {len(matrix)} vectors")
    return matrix, {item_id: row for row, item_id in enumerate(ids)}


def search_matrix(queries: npt.ArrayLike, k: int, dim: int) -> npt.NDArray[np.float32]:
    """A search's queries as a [n, dim] float32 matrix; raises for bad queries or `k` < 1."""
    if k < 1:
        raise VectorIndexError(f"k must be >= 1, got {k}")
    return as_matrix(queries, dim)


def top_k_of(
    matrix: npt.NDArray[np.float32], k: int, ids: Sequence[str], vectors: npt.NDArray[np.float32]
) -> list[Neighbours]:
    """Exact top-`k` of `ids` (rows of `vectors`) for each query row; ties: the lower row."""
    if not ids:
        return [Neighbours([], []) for _ in range(len(matrix))]
    scores = matrix @ vectors.T
    if k < scores.shape[1]:  # the k best unordered, then only those sorted
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(part, order, axis=1)
    else:
        best = np.argsort(-scores, axis=1, kind="stable")
    return [
        Neighbours([ids[c] for c in row], [float(scores[r, c]) for c in row])
        for r, row in enumerate(best)
    ]


class StampedIndex:
    """What every `VectorIndex` implementation shares: its width, many readers or one writer,
    validated input, and a stamp that every write moves. Subclasses implement `_upsert`,
    `_remove` and `_search`, which run under the lock."""

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise VectorIndexError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self._lock = ReadWriteLock()
        self._stamp = IndexStamp(0, None)

    @property
    def version(self) -> int:
        """Grows with every write; lets callers tell two states of the index apart."""
        return self._stamp.writes

    @property
    def stamp(self) -> IndexStamp:
        """Write count and model version, read together: equal stamps before and after a
        series of searches mean they all saw one state of one model version."""
        return self._stamp

    def upsert(
        self,
        ids: Sequence[str],
        vectors: npt.ArrayLike,
        model_version: int | None = None,
        *,
        removing: Sequence[str] = (),
    ) -> None:
        """Insert or replace the vectors of `ids` (the last one wins for repeated ids); with
        `model_version`, the index is from then on stamped as holding that version. Ids in
        `removing` (a version's retired items) leave in the same write: a search sees the
        new version whole, or the old one."""
        matrix, latest = upsert_rows(ids, vectors, self.dim)
        with self._lock.writing():
            gone = [i for i in dict.fromkeys(removing) if i not in latest]
            if gone:
                self._remove(gone)
            if latest:
                self._upsert(latest, matrix)
            self._stamp = self._stamp.after_write(model_version)

    def remove(self, ids: Sequence[str]) -> int:
        """Remove `ids`; unknown ids are ignored. Returns how many were present."""
        with self._lock.writing():
            removed = self._remove(list(dict.fromkeys(ids)))
            self._stamp = self._stamp.after_write(None)
        return removed

    def search(
        self, queries: npt.ArrayLike, k: int, among: Collection[str] | None = None
    ) -> list[Neighbours]:
        """Top-`k` ids and scores for each query row, best first. With `among`, only those
        items (unknown ones ignored) are scored, exactly, by a scan of their vectors: a
        strict filter (a small category) gets its true top-k from one search, where an
        approximate index searched whole could hold too few of them among its nearest."""
        matrix = search_matrix(queries, k, self.dim)
        with self._lock.reading():
            if among is None:
                return self._search(matrix, k)
            ids = [i for i in dict.fromkeys(among) if self.contains(i)]
            return top_k_of(matrix, k, ids, self._vectors_of(ids))

    def contains(self, item_id: str) -> bool:
        """Whether `item_id` is searchable."""
        raise NotImplementedError

    def vectors(self, ids: Sequence[str]) -> npt.NDArray[np.float32]:
        """Stored vectors of `ids` [n, dim]; raises for an unknown id."""
        with self._lock.reading():
            missing = [i for i in ids if not self.contains(i)]
            if missing:
                raise VectorIndexError(f"unknown item {missing[0]!r}")
            return self._vectors_of(list(ids))

    def _vectors_of(self, ids: list[str]) -> npt.NDArray[np.float32]:
        """The stored vectors of known `ids` as one [n, dim] matrix (read lock held)."""
        raise NotImplementedError

    def _upsert(self, latest: dict[str, int], matrix: npt.NDArray[np.float32]) -> None:
        """Store row `latest[id]` of `matrix` for each id (write lock held)."""
        raise NotImplementedError

    def _remove(self, ids: list[str]) -> int:
        """Drop distinct `ids`, returning how many were present (write lock held)."""
        raise NotImplementedError

    def _search(self, matrix: npt.NDArray[np.float32], k: int) -> list[Neighbours]:
        """Top-`k` of each row of a validated query matrix (read lock held)."""
        raise NotImplementedError
