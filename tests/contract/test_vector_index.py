"""One contract suite for every `VectorIndex`: FAISS Flat, HNSW and IVF, the exact numpy index,
and FAISS on the GPU where it sees one. Agreement with brute force, replace, remove, snapshots,
stamps, bad input, searches during writes."""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from store.exact_index import ExactVectorIndex
from store.faiss_index import FaissVectorIndex
from store.shared_index import SharedFlatIndex
from store.vector_index import VectorIndex, VectorIndexError

DIM = 16


@dataclass(frozen=True)
class Backend:
    """How to make an empty index of one implementation, and whether it answers exactly."""

    name: str
    make: Callable[[int], VectorIndex]
    exact: bool


BACKENDS = [
    Backend("faiss-flat", lambda dim: FaissVectorIndex(dim, "IDMap2,Flat", gpu=False), True),
    Backend("faiss-hnsw", lambda dim: FaissVectorIndex(dim, "IDMap2,HNSW32", gpu=False), False),
    Backend("faiss-ivf", lambda dim: FaissVectorIndex(dim, "IDMap2,IVF8,Flat", gpu=False), False),
    Backend("exact", ExactVectorIndex, True),
    Backend("shared-flat", SharedFlatIndex, True),
    Backend("shared-flat-mapped", lambda dim: _MappedAfterFirstWrite(dim), True),
]
if faiss.get_num_gpus() > 0:
    BACKENDS.append(
        Backend("faiss-flat-gpu", lambda dim: FaissVectorIndex(dim, "IDMap2,Flat", gpu=True), True)
    )


class _MappedAfterFirstWrite(SharedFlatIndex):
    """A shared index whose first write becomes its mapped base, as a replica's bulk does:
    later writes land in the delta over it."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._files = Path(tempfile.mkdtemp(prefix="shared-base-"))
        weakref.finalize(self, shutil.rmtree, self._files, True)
        self._mapped = False

    def upsert(self, *args: Any, **kwargs: Any) -> None:
        super().upsert(*args, **kwargs)
        if not self._mapped and self.size:
            self._mapped = True
            self.snapshot(self._files)
            self.restore(self._files)
            assert self.base_size
            assert not self.delta_size


def _unit(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    unit: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def _brute_force(
    ids: list[str], items: npt.NDArray[np.float32], query: npt.NDArray[np.float32], k: int
) -> list[str]:
    return [ids[c] for c in np.argsort(-(items @ query), kind="stable")[:k]]


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    chosen: Backend = request.param
    return chosen


@pytest.fixture
def index(backend: Backend) -> VectorIndex:
    return backend.make(DIM)


def test_search_agrees_with_brute_force(backend: Backend, index: VectorIndex) -> None:
    rng = np.random.default_rng(0)
    ids = [f"item-{n}-é" for n in range(600)]
    items = _unit(rng, len(ids))
    index.upsert(ids, items)
    queries = _unit(rng, 20)
    found = index.search(queries, k=10)
    overlap = [
        len(set(f.ids) & set(_brute_force(ids, items, q, 10))) / 10
        for f, q in zip(found, queries, strict=True)
    ]
    assert np.mean(overlap) == 1.0 if backend.exact else np.mean(overlap) >= 0.8
    for hit in found:
        assert hit.scores == sorted(hit.scores, reverse=True)
        assert set(hit.ids) <= set(ids)
    assert index.size == 600


def test_upsert_replaces_and_remove_hides_at_once(index: VectorIndex) -> None:
    rng = np.random.default_rng(1)
    ids = [f"i{n}" for n in range(400)]
    items = _unit(rng, len(ids))
    index.upsert(ids, items)
    target = items[7]
    index.upsert(["i3"], target[None, :])
    top = index.search(target, k=2)[0].ids
    assert set(top) == {"i3", "i7"}
    np.testing.assert_allclose(index.vectors(["i3"])[0], target, rtol=1e-6)
    version = index.version
    assert index.remove(["i7", "never-there"]) == 1
    assert index.version > version
    assert "i7" not in index.search(target, k=50)[0].ids
    assert index.size == 399


def test_many_replacements_never_return_stale_vectors(index: VectorIndex) -> None:
    rng = np.random.default_rng(2)
    ids = [f"i{n}" for n in range(400)]
    index.upsert(ids, _unit(rng, 400))
    for _ in range(5):
        index.upsert(ids[:150], _unit(rng, 150))
    results = index.search(_unit(rng, 30), k=20)
    for hit in results:
        assert len(hit.ids) == len(set(hit.ids)) == 20


def test_snapshot_restores_the_same_answers(
    backend: Backend, index: VectorIndex, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    ids = [f"i{n}" for n in range(500)]
    index.upsert(ids, _unit(rng, 500), model_version=7)
    index.remove(["i1", "i2"])
    index.snapshot(tmp_path)
    copy = backend.make(DIM)
    copy.restore(tmp_path)
    queries = _unit(rng, 5)
    assert [h.ids for h in copy.search(queries, 10)] == [h.ids for h in index.search(queries, 10)]
    assert copy.size == index.size == 498
    assert copy.stamp == index.stamp
    with pytest.raises(VectorIndexError, match="snapshot is"):
        backend.make(DIM + 1).restore(tmp_path)


def test_the_stamp_counts_every_write_and_keeps_the_last_model_version(
    index: VectorIndex,
) -> None:
    rng = np.random.default_rng(4)
    start = index.stamp
    index.upsert(["a", "b"], _unit(rng, 2), model_version=3)
    assert index.stamp == type(start)(start.writes + 1, 3)
    index.remove(["a"])
    index.upsert(["c"], _unit(rng, 1))
    assert index.stamp.model_version == 3
    index.upsert([], [], model_version=4)
    assert index.stamp == type(start)(start.writes + 4, 4)
    assert index.size == 2


def test_bad_input_is_refused_with_a_reason(index: VectorIndex) -> None:
    with pytest.raises(VectorIndexError, match=r"shape \[n, 16\]"):
        index.upsert(["a"], np.zeros((1, 3)))
    with pytest.raises(VectorIndexError, match="finite"):
        index.upsert(["a"], np.full((1, DIM), np.nan))
    with pytest.raises(VectorIndexError, match="2 ids for 1"):
        index.upsert(["a", "b"], np.zeros((1, DIM)))
    with pytest.raises(VectorIndexError, match="k must be"):
        index.search(np.zeros(DIM), k=0)


def test_searches_during_writes_never_crash_or_see_removed_items(index: VectorIndex) -> None:
    rng = np.random.default_rng(4)
    keep = [f"keep{n}" for n in range(300)]
    index.upsert(keep, _unit(rng, 300))
    removed = {f"gone{n}" for n in range(50)}
    index.upsert(sorted(removed), _unit(rng, 50))
    index.remove(sorted(removed))
    errors: list[BaseException] = []
    leaked: list[str] = []
    stop = threading.Event()

    def searcher() -> None:
        local = np.random.default_rng(5)
        try:
            while not stop.is_set():
                for hit in index.search(_unit(local, 8), k=10):
                    leaked.extend(i for i in hit.ids if i in removed)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for round_ in range(30):
        index.upsert([f"new{round_}-{n}" for n in range(20)], _unit(rng, 20))
        index.upsert(keep[:40], _unit(rng, 40))
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert leaked == []


def test_a_snapshot_of_another_implementation_is_refused(
    backend: Backend, index: VectorIndex, tmp_path: Path
) -> None:
    index.upsert(["a"], np.ones((1, DIM)))
    index.snapshot(tmp_path)
    other = BACKENDS[0] if backend.name == "exact" else BACKENDS[3]
    with pytest.raises(VectorIndexError):
        other.make(DIM).restore(tmp_path)


def test_a_search_among_some_items_is_their_exact_top_k(index: VectorIndex) -> None:
    """A filter's candidates (a small category) get their true top-k from one search, from
    every index type: the approximate ones too, which searched whole would hold few of them."""
    rng = np.random.default_rng(5)
    ids = [f"item-{n}" for n in range(3_000)]
    items = _unit(rng, len(ids))
    index.upsert(ids, items)
    among = {f"item-{n}" for n in range(0, 3_000, 97)} | {"unknown-item"}
    queries = _unit(rng, 5)
    found = index.search(queries, k=7, among=among)
    rows = sorted(int(i.split("-")[1]) for i in among if i != "unknown-item")
    for query, hits in zip(queries, found, strict=True):
        scores = items[rows] @ query
        best = [f"item-{rows[c]}" for c in np.argsort(-scores, kind="stable")[:7]]
        assert hits.ids == best
        assert hits.scores == pytest.approx(sorted(scores, reverse=True)[:7], rel=1e-4)
    assert index.search(queries[:1], k=3, among=[])[0].ids == []
