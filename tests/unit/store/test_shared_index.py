"""The shared index maps its base (no copy per process) and finds every id in it.
Search, replace, remove and snapshots are in the contract suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import store.shared_index
from store.shared_index import MappedIds, SharedFlatIndex
from store.vector_index import VectorIndexError

DIM = 64


def _anonymous_kb() -> int:
    """This process's own memory (not file pages, which processes mapping a file share)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


def _unit(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    unit: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def test_indexes_restored_from_one_base_map_it_rather_than_copy_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    items = _unit(rng, 100_000)  # 25.6 MB of vectors
    writer = SharedFlatIndex(DIM)
    writer.upsert([f"item-{n}" for n in range(len(items))], items, model_version=3)
    writer.snapshot(tmp_path)
    del writer
    queries = _unit(rng, 4)
    before = _anonymous_kb()
    readers = [SharedFlatIndex(DIM) for _ in range(3)]
    for reader in readers:
        reader.restore(tmp_path)
        reader.search(queries, k=10)  # every vector read
        reader.upsert(["item-7", "new"], _unit(rng, 2))  # changes stay in the process
    grown_kb = _anonymous_kb() - before
    assert grown_kb < 8_000, f"{grown_kb} kB of own memory for 3 x 25.6 MB mapped"
    for reader in readers:
        assert reader.base_directory == tmp_path
        assert reader.size == 100_001
        assert (reader.base_size, reader.delta_size) == (100_000, 3)  # 1 hidden, 2 in delta
        assert reader.stamp.model_version == 3
    exact = items @ queries[0]
    assert readers[0].search(queries[0], k=1)[0].ids == [f"item-{int(np.argmax(exact))}"]


@pytest.mark.parametrize(
    "ids",
    [["a", "b"], ["", "\x00", "é", "\ud800", "a\x00b", "x" * 300], [f"i{n}" for n in range(999)]],
)
def test_every_mapped_id_is_found_at_its_row(tmp_path: Path, ids: list[str]) -> None:
    MappedIds.write(tmp_path, ids)
    mapped = MappedIds(tmp_path, len(ids))
    assert mapped.all() == ids
    assert [mapped.row_of(i) for i in ids] == list(range(len(ids)))
    assert mapped.row_of("never-there") is None


def test_ids_whose_hashes_collide_are_told_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.shared_index, "_hash", lambda encoded: 0)
    ids = ["c", "a", "b"]
    MappedIds.write(tmp_path, ids)
    mapped = MappedIds(tmp_path, 3)
    assert [mapped.row_of(i) for i in ("a", "b", "c", "d")] == [1, 2, 0, None]


def test_a_damaged_or_foreign_base_is_refused_with_a_reason(tmp_path: Path) -> None:
    index = SharedFlatIndex(DIM)
    index.upsert(["a", "b"], _unit(np.random.default_rng(1), 2))
    index.snapshot(tmp_path)
    with pytest.raises(VectorIndexError, match="snapshot is shared-flat dim 64"):
        SharedFlatIndex(DIM + 1).restore(tmp_path)
    np.save(tmp_path / "vectors.npy", np.zeros((1, DIM), dtype=np.float32))
    with pytest.raises(VectorIndexError, match=r"not \(2, 64\)"):
        SharedFlatIndex(DIM).restore(tmp_path)
    (tmp_path / "index.json").unlink()
    with pytest.raises(VectorIndexError, match="cannot read snapshot"):
        SharedFlatIndex(DIM).restore(tmp_path)


def test_a_base_written_from_a_base_keeps_its_shown_ids_and_adds_the_delta(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(2)
    ids = ["", "\x00", "é", "\ud800", "a\x00b", "x" * 300, *(f"i{n}" for n in range(50))]
    first = SharedFlatIndex(DIM)
    first.upsert(ids, _unit(rng, len(ids)))
    first.snapshot(tmp_path / "one")
    index = SharedFlatIndex(DIM)
    index.restore(tmp_path / "one")
    index.remove(["", "i0", "i1", "i49"])  # hidden rows at the start, in runs and at the end
    index.upsert(["é", "new", "\x00\x00"], _unit(rng, 3))
    expected = dict(zip(index.ids(), index.vectors(index.ids()), strict=True))
    index.snapshot(tmp_path / "two")
    again = SharedFlatIndex(DIM)
    again.restore(tmp_path / "two")
    assert (again.base_size, again.delta_size) == (len(expected), 0)
    assert sorted(again.ids()) == sorted(expected)
    for item_id, vector in expected.items():
        np.testing.assert_array_equal(again.vectors([item_id])[0], vector)
    assert not again.contains("i0")
    assert not again.contains("")
