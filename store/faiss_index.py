"""FAISS behind the `VectorIndex` role: string ids, replace/remove on any index type, snapshots."""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from store.vector_index import IndexStamp, Neighbours, StampedIndex, VectorIndexError, write_atomic

log = logging.getLogger(__name__)
_omp = threading.local()


def use_omp_threads(n: int) -> None:
    """OpenMP threads for searches from this thread (an OpenMP setting is per calling thread):
    set once per thread, not per search, where the call cost ~5% of a replica's time."""
    if getattr(_omp, "threads", None) != n:
        faiss.omp_set_num_threads(n)
        _omp.threads = n


DEFAULT_FACTORY = "IDMap2,Flat"
_COMPACT_SHARE = 0.2
QUICK_SCAN = 2_000_000
_TRAIN_PER_LIST = 64  # IVF training sample per inverted list (FAISS wants 39 at least)
_RETRAIN_SHARE = 1.0  # IVF: retrain once this many vectors per trained one were added since


class FaissVectorIndex(StampedIndex):
    """An inner-product FAISS index built from a factory string (`IDMap2,Flat`, `IDMap2,HNSW32`,
    `IDMap2,IVF256,Flat`...).

    Every upsert gets a fresh int64 label; the replaced label is removed where the index
    type supports removal (Flat, IVF), else hidden (tombstoned: HNSW) and compacted away once
    tombstones pass 20% of the index. IVF keeps its own labels (any `IDMap2,` prefix is
    dropped) with a hash-table direct map, so it removes and reads vectors back in place. It
    answers exactly from held vectors until enough arrive to train it, and once as many
    vectors were added since as it was trained on (the catalogue grew, or the model moved
    the vectors away from the centroids), it is trained again in a background thread from
    its current vectors and swapped in whole, with the writes made meanwhile replayed:
    searches go on against the old one.

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
        nprobe: int = 32,
        gpu: bool | None = None,
    ) -> None:
        """`search_threads`: OpenMP threads per search (None: FAISS default). Serving wants 1:
        many small concurrent searches spin-wait against each other when each uses every core.
        `ef_search` / `ef_construction`: HNSW breadth (recall against speed); FAISS's 16 / 40
        defaults lose most true neighbours on hard data.
        `nprobe`: inverted lists an IVF search visits (recall against speed).
        `gpu`: keep a Flat index on every visible GPU (None: when faiss-gpu sees one). Graph
        and IVF indexes stay on the CPU.
        """
        super().__init__(dim)
        gpus = faiss.get_num_gpus()
        if gpu and gpus == 0:
            raise VectorIndexError("gpu=True but FAISS sees no GPU (install the gpu extra)")
        exhaustive = "HNSW" not in factory and "IVF" not in factory
        self.gpu = bool(gpus > 0 if gpu is None else gpu) and exhaustive
        self.ef_search, self.ef_construction, self.nprobe = ef_search, ef_construction, nprobe
        self.factory = factory
        self._ivf = "IVF" in factory
        self.search_threads = search_threads
        self._generation = 0  # moves when the index is replaced: a retrain then is stale
        self._retraining: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32] | None]]
        self._retraining = []
        self._retrain_thread: threading.Thread | None = None
        self._reset()

    def _reset(self) -> None:
        try:
            self._index = self._new_index()
        except RuntimeError as error:
            raise VectorIndexError(f"bad index factory {self.factory!r}: {error}") from None
        # HNSW cannot remove: it uses tombstones instead.
        self._removable = "HNSW" not in self.factory and not self.gpu
        self._nlist = int(faiss.extract_index_ivf(self._index).nlist) if self._ivf else 0
        self._trained_on = 0
        self._added = 0  # vectors added since the IVF was trained
        self._generation += 1
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
        scanned = self.size * self.dim
        if self._ivf and not self._untrained and self._nlist:
            scanned = scanned * min(self.nprobe, self._nlist) // self._nlist
        return "HNSW" in self.factory or scanned <= QUICK_SCAN

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
            use_omp_threads(self.search_threads)
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

    def _vectors_of(self, ids: list[str]) -> npt.NDArray[np.float32]:
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        held = [(row, i) for row, i in enumerate(ids) if i in self._label_of]
        if held:
            labels = np.fromiter((self._label_of[i] for _, i in held), np.int64, len(held))
            out[[row for row, _ in held]] = self._index.reconstruct_batch(labels)
        for row, item_id in enumerate(ids):
            if item_id in self._untrained:
                out[row] = self._untrained[item_id]
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
                "ivf_labels": "own" if self._ivf else None,
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
        if self._ivf and meta.get("ivf_labels") != "own":
            raise VectorIndexError(f"snapshot in {directory} has an older IVF layout")
        with self._lock.writing():
            self._index = self._placed(faiss.deserialize_index(blob))
            self._generation += 1
            self._trained_on, self._added = self._index.ntotal, 0
            self._label_of = {str(k): int(v) for k, v in meta["labels"].items()}
            self._id_of = {v: k for k, v in self._label_of.items()}
            self._untrained = {
                k: np.asarray(v, dtype=np.float32) for k, v in meta["untrained"].items()
            }
            self._next_label = int(meta["next_label"])
            self._tombstones = int(meta["tombstones"])
            self._stamp = IndexStamp(int(meta["version"]), meta.get("model_version"))

    def _new_index(self) -> faiss.Index:
        factory = re.sub(r"^IDMap2?,", "", self.factory) if self._ivf else self.factory
        index = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
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

    def _add(self, ids: list[str], matrix: npt.NDArray[np.float32], *, new: bool = True) -> None:
        """Index `ids` under fresh labels; `new`: vectors the IVF was not trained on."""
        labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
        self._next_label += len(ids)
        self._index.add_with_ids(matrix, labels)
        for item_id, label in zip(ids, labels.tolist(), strict=True):
            self._label_of[item_id] = label
            self._id_of[label] = item_id
        if self._ivf and new:
            self._added += len(ids)
            if self._retrain_thread is not None:
                self._retraining.append((labels, matrix.copy()))
            elif self._added >= _RETRAIN_SHARE * max(self._trained_on, 1):
                self._retrain_thread = threading.Thread(
                    target=self._retrain, name="ivf-retrain", daemon=True
                )
                self._retrain_thread.start()

    def _drop(self, ids: list[str]) -> int:
        labels = [self._label_of.pop(i) for i in ids if i in self._label_of]
        removed = len(labels) + sum(self._untrained.pop(i, None) is not None for i in ids)
        for label in labels:
            del self._id_of[label]
        if labels and self._removable:
            gone = np.asarray(labels, dtype=np.int64)
            self._index.remove_ids(gone)  # type: ignore[arg-type]
            if self._retrain_thread is not None:
                self._retraining.append((gone, None))
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
        self._add(ids, matrix, new=False)

    def _train(self, matrix: npt.NDArray[np.float32]) -> None:
        """Train the IVF index on its current vectors (see `_trained`)."""
        self._index = self._trained(self._index, matrix)
        self._trained_on, self._added = len(matrix), 0

    def _trained(self, index: faiss.Index, matrix: npt.NDArray[np.float32]) -> faiss.Index:
        """`index` trained on a sample of `matrix` (k-means time grows with the sample, not
        the catalogue), with a hash-table direct map: vectors are removed and read back by
        label."""
        most = _TRAIN_PER_LIST * self._nlist
        if len(matrix) > most:
            rows = np.random.default_rng(len(matrix)).choice(len(matrix), most, replace=False)
            matrix = matrix[np.sort(rows)]
        index.train(matrix)
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(self._nlist, self.nprobe)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        return index

    def _retrain(self) -> None:
        """Train a new IVF index on the current vectors and swap it in (background thread).
        Searches use the old one meanwhile; writes made meanwhile are replayed onto the new
        one before the swap, under the write lock."""
        try:
            with self._lock.reading():  # writes wait, searches go on
                generation = self._generation
                self._retraining = []  # writes from here on are replayed onto the new one
                labels = np.fromiter(self._id_of, dtype=np.int64, count=len(self._id_of))
                matrix = self._index.reconstruct_batch(labels) if len(labels) else None
            if matrix is None:
                return
            fresh = self._trained(self._new_index(), matrix)
            fresh.add_with_ids(matrix, labels)
            with self._lock.writing():
                if generation != self._generation:
                    return  # replaced meanwhile (a restore): this one is stale
                for changed, vectors in self._retraining:
                    if vectors is None:
                        fresh.remove_ids(changed)  # type: ignore[arg-type]
                    else:
                        fresh.add_with_ids(vectors, changed)
                self._index = fresh
                self._trained_on, self._added = int(fresh.ntotal), 0
        except Exception:  # the old index serves on; the next additions try again
            log.exception("retraining the IVF index failed")
        finally:
            with self._lock.writing():
                self._retraining = []
                self._retrain_thread = None

    def set_nprobe(self, nprobe: int) -> None:
        """Inverted lists an IVF search visits from now on (recall against speed)."""
        with self._lock.writing():
            self.nprobe = nprobe
            if self._ivf and self._index.is_trained:
                faiss.extract_index_ivf(self._index).nprobe = min(self._nlist, nprobe)

    def set_ef_search(self, ef_search: int) -> None:
        """Breadth of an HNSW search from now on (recall against speed)."""
        with self._lock.writing():
            self.ef_search = ef_search
            self._tune(self._index)

    def wait_retrained(self, timeout_s: float | None = None) -> None:
        """Wait for a background retrain, if one runs (tests, benchmarks)."""
        thread = self._retrain_thread
        if thread is not None:
            thread.join(timeout_s)

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
