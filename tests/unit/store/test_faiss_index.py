"""FAISS-specific behaviour beside the contract suite (tests/contract/test_vector_index.py)."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from store.faiss_index import FaissVectorIndex
from store.vector_index import VectorIndexError

DIM = 16


def test_asking_for_a_gpu_without_one_is_refused() -> None:
    if faiss.get_num_gpus() > 0:
        pytest.skip("this machine has a GPU")
    with pytest.raises(VectorIndexError, match="no GPU"):
        FaissVectorIndex(DIM, gpu=True)
    assert not FaissVectorIndex(DIM).gpu


def _unit(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    unit: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def _exact_ivf(lists: int = 8) -> FaissVectorIndex:
    """An IVF index whose searches visit every list: as exact as Flat, whatever its centroids."""
    return FaissVectorIndex(DIM, f"IDMap2,IVF{lists},Flat", nprobe=lists, gpu=False)


def _assert_holds(index: FaissVectorIndex, expected: dict[str, npt.NDArray[np.float32]]) -> None:
    """`index` holds exactly `expected` (each vector finds itself first) and nothing else."""
    ids = sorted(expected)
    assert sorted(index.ids()) == ids
    np.testing.assert_allclose(index.vectors(ids), np.stack([expected[i] for i in ids]))
    hits = index.search(np.stack([expected[i] for i in ids]), k=1)
    assert [h.ids[0] for h in hits] == ids


def test_a_trained_ivf_index_replaces_and_removes_vectors_in_place() -> None:
    rng = np.random.default_rng(0)
    index = _exact_ivf()
    vectors = dict(zip([f"i{n}" for n in range(400)], _unit(rng, 400), strict=True))
    index.upsert(list(vectors), np.stack(list(vectors.values())))
    index.wait_retrained()
    replaced = [f"i{n}" for n in range(0, 400, 3)]
    vectors.update(zip(replaced, _unit(rng, len(replaced)), strict=True))
    index.upsert(replaced, np.stack([vectors[i] for i in replaced]))
    index.wait_retrained()
    index.remove(["i1", "i2"])
    del vectors["i1"], vectors["i2"]
    _assert_holds(index, vectors)
    assert index._index.ntotal == len(vectors)  # no tombstones: IVF removes in place


def test_an_ivf_index_retrains_in_the_background_and_keeps_the_writes_made_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once as many vectors were added as it was trained on, a new IVF index is trained
    from the current vectors in a thread; searches and writes go on against the old one,
    and the writes made meanwhile are in the new one when it is swapped in."""
    rng = np.random.default_rng(1)
    index = _exact_ivf()
    vectors = dict(zip([f"i{n}" for n in range(320)], _unit(rng, 320), strict=True))
    index.upsert(list(vectors), np.stack(list(vectors.values())))  # trained on 320
    assert index._retrain_thread is None
    first = index._index
    training, release = threading.Event(), threading.Event()
    train = FaissVectorIndex._trained

    def slow_train(
        self: FaissVectorIndex, ivf: faiss.Index, matrix: npt.NDArray[np.float32]
    ) -> faiss.Index:
        training.set()
        assert release.wait(10)
        return train(self, ivf, matrix)

    monkeypatch.setattr(FaissVectorIndex, "_trained", slow_train)
    moved = list(vectors)  # the model moved every vector: retrain
    vectors.update(zip(moved, _unit(rng, len(moved)), strict=True))
    index.upsert(moved, np.stack([vectors[i] for i in moved]))
    assert training.wait(10)
    meanwhile = {f"new{n}": v for n, v in enumerate(_unit(rng, 5))}
    vectors.update(meanwhile)
    index.upsert(list(meanwhile), np.stack(list(meanwhile.values())))
    index.upsert(["i7"], _unit(rng, 1))
    vectors["i7"] = index.vectors(["i7"])[0]
    index.remove(["i8", "new0"])
    del vectors["i8"], vectors["new0"]
    _assert_holds(index, vectors)  # the old index, while the new one trains
    release.set()
    index.wait_retrained(10)
    assert index._index is not first
    _assert_holds(index, vectors)
    assert index._index.ntotal == len(vectors)


def test_a_wider_hnsw_search_finds_more_true_neighbours() -> None:
    rng = np.random.default_rng(7)
    items, queries = _unit(rng, 5_000), _unit(rng, 50)
    index = FaissVectorIndex(DIM, "IDMap2,HNSW32", ef_search=1, ef_construction=8, gpu=False)
    index.upsert([str(n) for n in range(len(items))], items)
    exact = [{str(n) for n in np.argsort(-(items @ q))[:10]} for q in queries]

    def recall() -> float:
        found = index.search(queries, k=10)
        return float(np.mean([len(set(f.ids) & e) / 10 for f, e in zip(found, exact, strict=True)]))

    narrow = recall()
    index.set_ef_search(256)
    assert recall() > narrow + 0.1
