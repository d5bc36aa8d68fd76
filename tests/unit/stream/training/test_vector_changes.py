"""Which item vectors changed since the last catalogue seen, and which ids left."""

from __future__ import annotations

import numpy as np
import pytest

from stream.training.vector_changes import VectorChanges


def _matrix(*rows: list[float]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


def test_new_ids_and_moved_vectors_are_changed_and_ids_that_left_are_retired() -> None:
    changes = VectorChanges(dim=2)
    first = ["a", "b", "c"]
    changed, retired = changes.since(first, _matrix([1, 0], [0, 1], [1, 1]))
    assert changed.tolist() == [True, True, True]
    assert retired == []
    changes.remember(first, _matrix([1, 0], [0, 1], [1, 1]))

    later = ["c", "a", "d"]  # b left, d is new, a moved, c stayed (in another row)
    changed, retired = changes.since(later, _matrix([1, 1], [1, 0.5], [2, 2]))
    assert changed.tolist() == [False, True, True]
    assert retired == ["b"]


def test_the_same_id_list_is_compared_row_by_row() -> None:
    changes = VectorChanges(dim=2)
    ids = ["a", "b"]
    changes.remember(ids, _matrix([1, 0], [0, 1]))
    changed, retired = changes.since(ids, _matrix([1, 0], [0, 2]))
    assert changed.tolist() == [False, True]
    assert retired == []


def test_after_forget_every_vector_is_new() -> None:
    changes = VectorChanges(dim=2)
    ids = ["a", "b"]
    vectors = _matrix([1, 0], [0, 1])
    changes.remember(ids, vectors)
    changes.forget()
    changed, retired = changes.since(ids, vectors)
    assert changed.tolist() == [True, True]
    assert retired == []


def test_ids_appended_to_the_last_list_are_new_and_the_rest_compared_row_by_row() -> None:
    changes = VectorChanges(dim=2)
    changes.remember(["a", "b"], _matrix([1, 0], [0, 1]))
    changed, retired = changes.since(["a", "b", "c"], _matrix([1, 0], [0, 2], [0, 1]))
    assert changed.tolist() == [False, True, True]
    assert retired == []


def test_rows_are_compared_a_chunk_at_a_time_with_every_row_compared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks keep the comparison's temporaries small; none may skip or repeat a row."""
    monkeypatch.setattr("stream.training.vector_changes._CHUNK", 3)
    rng = np.random.default_rng(3)
    before = rng.normal(size=(11, 4)).astype(np.float32)
    ids = [f"i{n}" for n in range(11)]
    for moved in ([], [0], [2, 3], [10], [5, 8, 9]):
        changes = VectorChanges(dim=4)
        changes.remember(ids, before)
        after = before.copy()
        after[moved, 1] += 1
        changed, _ = changes.since([*ids, "new"], np.vstack([after, before[:1]]))
        assert np.flatnonzero(changed).tolist() == [*moved, 11]
