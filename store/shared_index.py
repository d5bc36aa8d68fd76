"""An exact index whose bulk is memory-mapped files, one copy per host, with recent changes
held in process.

Several API processes on one host (`RECSTREAM_API_PROCESSES`) each held a whole index: at 1M
items of 64 floats, 256 MB of vectors and as much again of id maps, per process. This index
keeps its *base* in the files of a snapshot directory that every process maps read-only, so
the page cache holds them once whatever the process count, ids included (found by hash, not
by a dict). Only what changed since, its *delta* (a small FAISS index, and a bitmap of the
base rows it hides), lives in each process. Whoever follows the feed moves it onto a newer
snapshot now and then (`IndexFollower`), which keeps the delta small.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from store.faiss_index import QUICK_SCAN, FaissVectorIndex, use_omp_threads
from store.vector_index import IndexStamp, Neighbours, StampedIndex, VectorIndexError, write_atomic

KIND = "shared-flat"
_RECENT_ROWS = 65_536  # ids whose rows a process remembers: bounded, whatever the base


def _encoded(item_id: str) -> bytes:
    return item_id.encode("utf-8", "surrogatepass")


def _hash(encoded: bytes) -> int:
    """A 64-bit hash of an id, the same in every process (Python's `hash` is not)."""
    return int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "little")


def _hashes(ids: Iterable[bytes], count: int) -> npt.NDArray[np.uint64]:
    return np.fromiter(map(_hash, ids), dtype=np.uint64, count=count)


def _save(path: Path, array: npt.NDArray[np.generic]) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        np.save(out, array)
    os.replace(partial, path)


def _mapped(path: Path, dtype: type[np.generic], shape: tuple[int, ...]) -> npt.NDArray[Any]:
    """A saved array mapped read-only (its pages shared by every process that maps it)."""
    array = np.load(path, mmap_mode="r") if shape[0] else np.empty(shape, dtype=dtype)
    if array.dtype != dtype or array.shape != shape:
        raise VectorIndexError(f"{path} holds {array.dtype} {array.shape}, not {shape}")
    return array.view(np.ndarray)  # the same pages; indexing a memmap costs ~10x more


class MappedIds:
    """The ids of a base's rows, mapped: UTF-8 end to end with their ends, and their hashes
    sorted with the row of each, so a lookup is a binary search rather than a dict entry."""

    def __init__(self, directory: Path, count: int) -> None:
        self._ends = _mapped(directory / "ends.npy", np.int64, (count,))
        total = int(self._ends[-1]) if count else 0
        self._blob = _mapped(directory / "ids.npy", np.uint8, (total,))
        self._hashes = _mapped(directory / "hashes.npy", np.uint64, (count,))
        self._rows = _mapped(directory / "rows.npy", np.int64, (count,))
        self._recent: dict[str, int | None] = {}

    @staticmethod
    def write(
        directory: Path,
        ids: list[str],
        kept_from: MappedIds | None = None,
        kept: npt.NDArray[np.int64] | None = None,
    ) -> int:
        """Write the rows `kept` of `kept_from` (as arrays: no string per id, no hash again),
        then `ids`, as the ids of a new base; returns how many."""
        encoded = [_encoded(i) for i in ids]
        blobs = [np.frombuffer(b"".join(encoded), dtype=np.uint8)]
        lengths = [np.fromiter(map(len, encoded), np.int64, len(encoded))]
        hashes = [_hashes(encoded, len(encoded))]
        if kept_from is not None and kept is not None and len(kept):
            blob, length, hashed = kept_from._rows_as_arrays(kept)
            blobs.insert(0, blob)
            lengths.insert(0, length)
            hashes.insert(0, hashed)
        ends = np.cumsum(np.concatenate(lengths), dtype=np.int64)
        every_hash = np.concatenate(hashes)
        rows = np.argsort(every_hash, kind="stable").astype(np.int64)
        _save(directory / "ids.npy", np.concatenate(blobs))
        _save(directory / "ends.npy", ends)
        _save(directory / "hashes.npy", every_hash[rows])
        _save(directory / "rows.npy", rows)
        return len(ends)

    def _rows_as_arrays(
        self, kept: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.uint64]]:
        """The bytes, lengths and hashes of the ids of rows `kept` (ascending), copied by runs
        of consecutive rows: a base keeps most of its rows."""
        starts = np.concatenate([[0], self._ends[:-1]]).astype(np.int64)
        lengths = self._ends - starts
        runs = np.split(kept, np.flatnonzero(np.diff(kept) != 1) + 1)
        blob = np.concatenate(
            [self._blob[starts[run[0]] : self._ends[run[-1]]] for run in runs if len(run)]
            or [np.empty(0, np.uint8)]
        )
        by_row = np.empty(len(self._ends), dtype=np.uint64)
        by_row[self._rows] = self._hashes
        return blob, lengths[kept], by_row[kept]

    def __len__(self) -> int:
        return len(self._ends)

    def _bytes_at(self, row: int) -> bytes:
        start = int(self._ends[row - 1]) if row else 0
        return self._blob[start : int(self._ends[row])].tobytes()

    def at(self, row: int) -> str:
        return self._bytes_at(row).decode("utf-8", "surrogatepass")

    def row_of(self, item_id: str) -> int | None:
        """The row of `item_id`, or None (remembered for the ids asked about lately: a
        request asks for the same candidates' vectors more than once)."""
        if item_id in self._recent:
            return self._recent[item_id]
        if len(self._recent) >= _RECENT_ROWS:
            self._recent.clear()
        row = self._recent[item_id] = self._find(item_id)
        return row

    def _find(self, item_id: str) -> int | None:
        encoded = _encoded(item_id)
        wanted = _hash(encoded)
        hashes = self._hashes
        at = int(hashes.searchsorted(np.uint64(wanted)))
        while at < len(hashes) and int(hashes[at]) == wanted:
            row = int(self._rows[at])
            if self._bytes_at(row) == encoded:
                return row
            at += 1
        return None

    def all(self) -> list[str]:
        blob = bytes(self._blob)
        ends = self._ends.tolist()
        starts = [0, *ends[:-1]]
        return [
            blob[a:b].decode("utf-8", "surrogatepass") for a, b in zip(starts, ends, strict=True)
        ]


class SharedFlatIndex(StampedIndex):
    """Exact inner-product search over a mapped base and an in-process delta (see the module).

    An upsert hides the item's base row (a bit) and puts its vector in the delta; a removal
    hides the row or drops it from the delta. A search scans the base's visible rows with
    FAISS (a bitmap selector) and the delta, and merges the two. `snapshot` writes the
    merged state as a new base; `restore` maps one, which empties the delta.

    >>> index = SharedFlatIndex(dim=2)
    >>> index.upsert(["a", "b"], [[1.0, 0.0], [0.0, 1.0]])
    >>> index.search([[0.9, 0.1]], k=1)[0].ids
    ['a']
    """

    def __init__(self, dim: int, *, search_threads: int | None = 1) -> None:
        """`search_threads`: OpenMP threads per search (None: FAISS default); see
        `FaissVectorIndex`."""
        super().__init__(dim)
        self.search_threads = search_threads
        self._vectors: npt.NDArray[np.float32] = np.empty((0, dim), dtype=np.float32)
        self._ids: MappedIds | None = None
        self._directory: Path | None = None
        self._visible = np.zeros(0, dtype=np.uint8)  # one bit per base row: 1 = searchable
        self._selector: faiss.IDSelectorBitmap | None = None
        self._hidden = 0
        self._delta = self._new_delta()

    def _new_delta(self) -> FaissVectorIndex:
        return FaissVectorIndex(
            self.dim, "IDMap2,Flat", search_threads=self.search_threads, gpu=False
        )

    def empty_copy(self) -> SharedFlatIndex:
        """An empty index of the same settings (to restore a snapshot into, then `take`)."""
        return SharedFlatIndex(self.dim, search_threads=self.search_threads)

    @property
    def base_directory(self) -> Path | None:
        """The snapshot directory whose files this index maps (None: no base)."""
        return self._directory

    @property
    def base_size(self) -> int:
        """Rows of the mapped base, hidden ones included."""
        return len(self._vectors)

    @property
    def delta_size(self) -> int:
        """Changes held in this process: base rows hidden, and vectors in the delta."""
        return self._hidden + self._delta.size

    @property
    def size(self) -> int:
        """Items currently searchable."""
        return self.base_size - self._hidden + self._delta.size

    @property
    def searches_quickly(self) -> bool:
        """Whether one search scans so little that a thread of its own costs more."""
        return self.size * self.dim <= QUICK_SCAN

    def ids(self) -> list[str]:
        """Every searchable item id."""
        with self._lock.reading():
            base = self._ids.all() if self._ids is not None else []
            if self._hidden:
                shown = self._shown_rows()
                base = [base[row] for row in shown]
            return [*base, *self._delta.ids()]

    def contains(self, item_id: str) -> bool:
        """Whether `item_id` is searchable."""
        return self._delta.contains(item_id) or self._base_row(item_id) is not None

    def _shown_rows(self) -> npt.NDArray[np.int64]:
        bits = np.unpackbits(self._visible, count=self.base_size, bitorder="little")
        return np.flatnonzero(bits).astype(np.int64)

    def _base_row(self, item_id: str) -> int | None:
        """The base row of `item_id` while it is searchable there."""
        row = self._ids.row_of(item_id) if self._ids is not None else None
        if row is None or not (self._visible[row >> 3] >> (row & 7)) & 1:
            return None
        return row

    def _hide(self, ids: list[str]) -> int:
        hidden = 0
        for item_id in ids:
            row = self._base_row(item_id)
            if row is not None:
                self._visible[row >> 3] &= np.uint8(~(1 << (row & 7)) & 0xFF)
                hidden += 1
        self._hidden += hidden
        return hidden

    def _upsert(self, latest: dict[str, int], matrix: npt.NDArray[np.float32]) -> None:
        self._hide(list(latest))
        self._delta.upsert(list(latest), matrix[list(latest.values())])

    def _remove(self, ids: list[str]) -> int:
        return self._hide(ids) + self._delta.remove(ids)

    def _vectors_of(self, ids: list[str]) -> npt.NDArray[np.float32]:
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        in_delta: list[tuple[int, str]] = []
        for n, item_id in enumerate(ids):
            if self._delta.contains(item_id):
                in_delta.append((n, item_id))
            elif (row := self._base_row(item_id)) is not None:
                out[n] = self._vectors[row]
        if in_delta:
            out[[n for n, _ in in_delta]] = self._delta.vectors([i for _, i in in_delta])
        return out

    def _search(self, matrix: npt.NDArray[np.float32], k: int) -> list[Neighbours]:
        if self.search_threads is not None:
            use_omp_threads(self.search_threads)
        delta = self._delta.search(matrix, k) if self._delta.size else None
        shown = self.base_size - self._hidden
        if not shown or self._ids is None:
            return delta or [Neighbours([], []) for _ in range(len(matrix))]
        fetch = min(k, shown)
        scores = np.empty((len(matrix), fetch), dtype=np.float32)
        rows = np.empty((len(matrix), fetch), dtype=np.int64)
        faiss.knn_inner_product(
            faiss.swig_ptr(matrix),
            faiss.swig_ptr(self._vectors),
            self.dim,
            len(matrix),
            self.base_size,
            fetch,
            faiss.swig_ptr(scores),
            faiss.swig_ptr(rows),
            self._selector if self._hidden else None,
        )
        out = []
        for n, (row_scores, row_rows) in enumerate(
            zip(scores.tolist(), rows.tolist(), strict=True)
        ):
            hits = [
                (s, self._ids.at(r)) for s, r in zip(row_scores, row_rows, strict=True) if r >= 0
            ]
            if delta is not None:
                hits += zip(delta[n].scores, delta[n].ids, strict=True)
                hits.sort(key=lambda hit: -hit[0])
            out.append(Neighbours([i for _, i in hits[:k]], [s for s, _ in hits[:k]]))
        return out

    def snapshot(self, directory: Path) -> None:
        """Write the index as it is (base and delta merged) as a base to `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock.reading():
            shown = self._shown_rows()
            delta_ids = self._delta.ids()
            matrix = np.concatenate([self._vectors[shown], self._delta.vectors(delta_ids)])
            stamp, base = self._stamp, self._ids
            _save(directory / "vectors.npy", np.ascontiguousarray(matrix, dtype=np.float32))
            del matrix
            count = MappedIds.write(directory, delta_ids, base, shown)
        meta = {
            "kind": KIND,
            "dim": self.dim,
            "count": count,
            "version": stamp.writes,
            "model_version": stamp.model_version,
        }
        write_atomic(directory / "index.json", json.dumps(meta).encode())

    def restore(self, directory: Path) -> None:
        """Map the base written by `snapshot` to `directory`; the delta starts empty."""
        try:
            meta = json.loads((directory / "index.json").read_bytes())
            kind, dim = meta.get("kind", meta.get("factory")), meta["dim"]
            if kind != KIND or dim != self.dim:
                raise VectorIndexError(
                    f"snapshot is {kind} dim {dim}, index is {KIND} dim {self.dim}"
                )
            count = int(meta["count"])
            vectors = _mapped(directory / "vectors.npy", np.float32, (count, self.dim))
            ids = MappedIds(directory, count)
        except (OSError, ValueError, KeyError, TypeError) as error:
            if isinstance(error, VectorIndexError):
                raise
            raise VectorIndexError(f"cannot read snapshot in {directory}: {error}") from None
        with self._lock.writing():
            self._set_base(vectors, ids)
            self._directory = directory
            self._stamp = IndexStamp(int(meta["version"]), meta.get("model_version"))

    def _set_base(self, vectors: npt.NDArray[np.float32], ids: MappedIds) -> None:
        self._vectors, self._ids, self._hidden = vectors, ids, 0
        self._visible = np.full((len(vectors) + 7) // 8, 0xFF, dtype=np.uint8)
        self._selector = faiss.IDSelectorBitmap(len(vectors), faiss.swig_ptr(self._visible))
        self._delta = self._new_delta()

    def take(self, other: SharedFlatIndex) -> None:
        """Become `other`, a copy restored from a newer base and brought to this state or a
        newer one, in one write (searches see this index before or after, never between)."""
        with self._lock.writing():
            self._vectors, self._ids, self._hidden = other._vectors, other._ids, other._hidden
            self._visible, self._selector = other._visible, other._selector
            self._delta, self._directory = other._delta, other._directory
            self._stamp = self._stamp.after_write(other.stamp.model_version)
