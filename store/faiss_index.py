"""FAISS behind the `VectorIndex` role: string ids, replace/remove on any index type, snapshots."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from store.vector_index import IndexStamp, Neighbours, StampedIndex, VectorIndexError, write_atomic

_omp = threading.local()


def _use_omp_threads(n: int) -> None:
    """OpenMP threads for searches from this thread (an OpenMP setting is per calling thread):
    set once per thread, not per search, where the call cost ~5% of a replica's time."""
    if getattr(_omp, "threads", None) != n:
        faiss.omp_set_num_threads(n)
        _omp.threads = n


DEFAULT_FACTORY = "IDMap2,Flat"
_COMPACT_SHARE = 0.2
_QUICK_SCAN = 2_000_000


class FaissVectorIndex(StampedIndex):
    """An inner-product FAISS index built from a factory string (`IDMap2,Flat`, `IDMap2,HNSW32`,
    `IDMap2,IVF256,Flat`...).

    Every upsert gets a fresh int64 label; the replaced label is removed where the index
    type supports removal, else hidden (tombstoned) and compacted away once tombstones pass
    20% of the index. Untrained index types (IVF) answer exactly from held vectors until
    enough vectors arrive to train them.

    >>> index = FaissVectorIndex(dim=2)
    >>> index.upsert(["a", "b"], [[1.0, 0.0], [0.0, 1.0]])
    >>> index.search([[0.9, 0.1]], k=1)[0].ids
    ['a']
    """

    def __init__(
        self,
        dim: int,
        factory: str = DEFAULT_FACTORY,
        *,
        search_threads: int | None = None,
        ef_search: int = 128,
        ef_construction: int = 80,
        gpu: bool | None = None,
    ) -> None:
        """`search_threads`: OpenMP threads per search (None: FAISS default). Serving wants 1:
        many small concurrent searches spin-wait against each other when each uses every core.
        `ef_search` / `ef_construction`: HNSW breadth (recall against speed); FAISS's 16 / 40
        defaults lose most true neighbours on hard data.
        `gpu`: keep a Flat index on every visible GPU (None: when faiss-gpu sees one). Graph
        and IVF indexes stay on the CPU.
        """
        super().__init__(dim)
        gpus = faiss.get_num_gpus()
        if gpu and gpus == 0:
            raise VectorIndexError("gpu=True but FAISS sees no GPU (install the gpu extra)")
        exhaustive = "HNSW" not in factory and "IVF" not in factory
        self.gpu = bool(gpus > 0 if gpu is None else gpu) and exhaustive
        self.ef_search, self.ef_construction = ef_search, ef_construction
        self.factory = factory
        self.search_threads = search_threads
        self._reset()

    def _reset(self) -> None:
        try:
            self._index = self._new_index()
        except RuntimeError as error:
            raise VectorIndexError(f"bad index factory {self.factory!r}: {error}") from None
        # IDMap2's remove_ids assumes the inner index renumbers like Flat; HNSW cannot remove
        # and IVF keeps its own ids, so both use tombstones instead.
        self._removable = "HNSW" not in self.factory and "IVF" not in self.factory and not self.gpu
        self._nlist = 0
        if not self._index.is_trained:
            self._nlist = int(faiss.extract_index_ivf(self._index).nlist)
        self._label_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._untrained: dict[str, npt.NDArray[np.float32]] = {}
        self._tombstones = 0
        self._next_label = 0

    @property
    def size(self) -> int:
        """Items currently searchable."""
        return len(self._label_of) + len(self._untrained)

    @property
    def searches_quickly(self) -> bool:
        """Whether one search takes well under a millisecond (graph index, or a small scan):
        then handing it to a thread costs more than it saves."""
        return "HNSW" in self.factory or self.size * self.dim <= _QUICK_SCAN

    def ids(self) -> list[str]:
        """Every searchable item id."""
        with self._lock.reading():
            return [*self._label_of, *self._untrained]

    def contains(self, item_id: str) -> bool:
        """Whether `item_id` is searchable."""
        return item_id in self._label_of or item_id in self._untrained

    def _upsert(self, latest: dict[str, int], matrix: npt.NDArray[np.float32]) -> None:
        self._drop(list(latest))
        if not self._index.is_trained:
            self._untrained.update({i: matrix[r].copy() for i, r in latest.items()})
            self._train_when_ready()
        else:
            self._add(list(latest), matrix[list(latest.values())])

    def _remove(self, ids: list[str]) -> int:
        return self._drop(ids)

    def _search(self, matrix: npt.NDArray[np.float32], k: int) -> list[Neighbours]:
        if self.search_threads is not None:
            _use_omp_threads(self.search_threads)
        if self._untrained:
            return self._exact(matrix, k)
        if self._index.ntotal == 0:
            return [Neighbours([], []) for _ in range(len(matrix))]
        fetch = min(k + self._tombstones, self._index.ntotal)
        scores, labels = self._index.search(matrix, fetch)
        id_of = self._id_of
        out = []
        for row_scores, row_labels in zip(scores, labels, strict=True):
            hits = [
                (id_of[int(lb)], float(s))
                for s, lb in zip(row_scores, row_labels, strict=True)
                if int(lb) in id_of
            ]
            out.append(Neighbours([h[0] for h in hits[:k]], [h[1] for h in hits[:k]]))
        return out

    def vectors(self, ids: Sequence[str]) -> npt.NDArray[np.float32]:
        """Stored vectors of `ids` [n, dim]; raises for an unknown id."""
        with self._lock.reading():
            out = np.empty((len(ids), self.dim), dtype=np.float32)
            for row, item_id in enumerate(ids):
                if item_id in self._untrained:
                    out[row] = self._untrained[item_id]
                elif item_id in self._label_of:
                    out[row] = self._index.reconstruct(self._label_of[item_id])
                else:
                    raise VectorIndexError(f"unknown item {item_id!r}")
            return out

    def snapshot(self, directory: Path) -> None:
        """Write the index and its id mapping to `directory` (replaced atomically per file)."""
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock.reading():
            blob = faiss.serialize_index(
                faiss.index_gpu_to_cpu(self._index) if self.gpu else self._index
            )
            meta = {
                "dim": self.dim,
                "factory": self.factory,
                "version": self._stamp.writes,
                "model_version": self._stamp.model_version,
                "next_label": self._next_label,
                "tombstones": self._tombstones,
                "labels": self._label_of,
                "untrained": {i: v.tolist() for i, v in self._untrained.items()},
            }
        write_atomic(directory / "index.faiss", blob.tobytes())
        write_atomic(directory / "index.json", json.dumps(meta).encode())

    def restore(self, directory: Path) -> None:
        """Replace this index with a snapshot written by `snapshot`."""
        try:
            meta = json.loads((directory / "index.json").read_bytes())
            blob = np.frombuffer((directory / "index.faiss").read_bytes(), dtype=np.uint8)
        except (OSError, ValueError) as error:
            raise VectorIndexError(f"cannot read snapshot in {directory}: {error}") from None
        if meta["dim"] != self.dim or meta["factory"] != self.factory:
            raise VectorIndexError(
                f"snapshot is {meta['factory']} dim {meta['dim']}, index is {self.factory} "
                f"dim {self.dim}"
            )
        with self._lock.writing():
            self._index = self._placed(faiss.deserialize_index(blob))
            self._label_of = {str(k): int(v) for k, v in meta["labels"].items()}
            self._id_of = {v: k for k, v in self._label_of.items()}
            self._untrained = {
                k: np.asarray(v, dtype=np.float32) for k, v in meta["untrained"].items()
            }
            self._next_label = int(meta["next_label"])
            self._tombstones = int(meta["tombstones"])
            self._stamp = IndexStamp(int(meta["version"]), meta.get("model_version"))

    def _new_index(self) -> faiss.Index:
        index = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        return self._placed(index)

    def _placed(self, index: faiss.Index) -> faiss.Index:
        """Tuned, and moved to the GPUs when this index uses them."""
        self._tune(index)
        return faiss.index_cpu_to_all_gpus(index) if self.gpu else index

    def _tune(self, index: faiss.Index) -> None:
        inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
        if isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efSearch = self.ef_search
            inner.hnsw.efConstruction = self.ef_construction

    def _add(self, ids: list[str], matrix: npt.NDArray[np.float32]) -> None:
        labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
        self._next_label += len(ids)
        self._index.add_with_ids(matrix, labels)
        for item_id, label in zip(ids, labels.tolist(), strict=True):
            self._label_of[item_id] = label
            self._id_of[label] = item_id

    def _drop(self, ids: list[str]) -> int:
        labels = [self._label_of.pop(i) for i in ids if i in self._label_of]
        removed = len(labels) + sum(self._untrained.pop(i, None) is not None for i in ids)
        for label in labels:
            del self._id_of[label]
        if labels and self._removable:
            self._index.remove_ids(np.asarray(labels, dtype=np.int64))  # type: ignore[arg-type]
        elif labels:
            self._tombstones += len(labels)
            if self._tombstones > _COMPACT_SHARE * max(self._index.ntotal, 1):
                self._compact()
        return removed

    def _compact(self) -> None:
        """Rebuild without tombstoned labels (for index types that cannot remove)."""
        ids = list(self._label_of)
        matrix = (
            np.stack([self._index.reconstruct(self._label_of[i]) for i in ids]) if ids else None
        )
        self._index = self._new_index()
        self._label_of, self._id_of, self._tombstones = {}, {}, 0
        if matrix is None:
            return
        if self._index.is_trained:
            self._add(ids, matrix)
        else:
            self._untrained = dict(zip(ids, matrix, strict=True))
            self._train_when_ready()

    def _train_when_ready(self) -> None:
        if len(self._untrained) < 39 * self._nlist:
            return
        ids = list(self._untrained)
        matrix = np.stack([self._untrained[i] for i in ids])
        self._train(matrix)
        self._untrained = {}
        self._add(ids, matrix)

    def _train(self, matrix: npt.NDArray[np.float32]) -> None:
        """Train an IVF index and keep a direct map so that stored vectors can be read back."""
        self._index.train(matrix)
        ivf = faiss.extract_index_ivf(self._index)
        ivf.nprobe = min(self._nlist, 16)
        ivf.make_direct_map()

    def _exact(self, matrix: npt.NDArray[np.float32], k: int) -> list[Neighbours]:
        ids = list(self._untrained)
        if not ids:
            return [Neighbours([], []) for _ in range(len(matrix))]
        scores = matrix @ np.stack([self._untrained[i] for i in ids]).T
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [
            Neighbours([ids[c] for c in row], [float(scores[r, c]) for c in row])
            for r, row in enumerate(best)
        ]
