"""IdVocabulary: collisionless growth, admission, expiry with recycling, save/load."""

from __future__ import annotations

import pytest

from model.vocabulary import UNKNOWN_ROW, IdVocabulary, VocabularyError


def test_distinct_ids_never_share_a_row() -> None:
    vocab = IdVocabulary(chunk=8)
    ids = [f"item-{i}" for i in range(1_000)]
    rows = vocab.observe(ids, ts_ms=0).rows
    assert len(set(rows.tolist())) == 1_000
    assert UNKNOWN_ROW not in rows
    assert vocab.lookup(ids).tolist() == rows.tolist()


def test_capacity_grows_in_chunks_without_a_maximum() -> None:
    vocab = IdVocabulary(chunk=100)
    admission = vocab.observe([f"i{n}" for n in range(250)], ts_ms=0)
    assert admission.capacity == vocab.capacity == 300
    assert max(admission.rows) < vocab.capacity


def test_ids_below_the_admission_threshold_share_the_unknown_row() -> None:
    vocab = IdVocabulary(admit_after=3)
    assert vocab.observe(["a", "a"], ts_ms=0).rows.tolist() == [UNKNOWN_ROW, UNKNOWN_ROW]
    assert "a" not in vocab
    third = vocab.observe(["a"], ts_ms=1)
    assert third.rows.tolist() == third.fresh_rows == [1]
    assert vocab.lookup(["a"]).tolist() == [1]


def test_expired_ids_free_rows_that_new_ids_reuse_as_fresh_rows() -> None:
    vocab = IdVocabulary(expire_after_ms=1_000)
    vocab.observe(["old", "kept"], ts_ms=0)
    vocab.observe(["kept"], ts_ms=1_500)
    old_row = int(vocab.lookup(["old"])[0])
    assert vocab.expire(now_ms=2_000) == ["old"]
    assert vocab.lookup(["old"]).tolist() == [UNKNOWN_ROW]
    admission = vocab.observe(["new"], ts_ms=2_000)
    assert admission.rows.tolist() == [old_row]
    assert admission.fresh_rows == [old_row]
    assert vocab.id_of(old_row) == "new"
    assert len(vocab) == 2


def test_state_round_trip_keeps_rows_free_list_and_pending_counts() -> None:
    vocab = IdVocabulary(admit_after=2, expire_after_ms=10, chunk=4)
    vocab.observe(["a", "a", "b", "b", "c"], ts_ms=0)
    vocab.observe(["b", "b"], ts_ms=20)
    vocab.expire(now_ms=25)
    restored = IdVocabulary.from_state_dict(vocab.state_dict())
    assert restored.lookup(["a", "b", "c"]).tolist() == vocab.lookup(["a", "b", "c"]).tolist()
    assert restored.capacity == vocab.capacity
    assert restored.observe(["x", "x"], ts_ms=30).rows.tolist() == [0, 1]
    assert restored.observe(["c"], ts_ms=30).rows.tolist() == [UNKNOWN_ROW]


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(VocabularyError):
        IdVocabulary(admit_after=0)
    with pytest.raises(VocabularyError):
        IdVocabulary(expire_after_ms=0)


def test_a_restored_vocabulary_hands_out_free_rows_as_the_saved_one_would() -> None:
    vocab = IdVocabulary(expire_after_ms=10, chunk=8)
    vocab.observe(["a", "b", "c", "d"], ts_ms=0)
    vocab.observe(["b", "d"], ts_ms=20)
    vocab.expire(now_ms=25)  # rows of a and c are free
    restored = IdVocabulary.from_state_dict(vocab.state_dict())
    assert len(restored) == 2
    assert "" not in restored
    assert restored.lookup(["", "a", "b", "c", "d"]).tolist() == [0, 0, 2, 0, 4]
    new = ["x", "y", "z"]  # the two free rows first, then a new one
    assert sorted(restored.observe(new, ts_ms=30).rows.tolist()) == [1, 3, 5]
