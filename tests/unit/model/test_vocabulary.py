"""IdVocabulary: collisionless growth, admission, expiry with recycling, save/load."""

from __future__ import annotations

import random

import pytest
import torch

from model.packed import unpack_bools, unpack_strings
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


def _tables(vocab: IdVocabulary) -> tuple[object, ...]:
    return (vocab._ids, vocab._rows, vocab._free, vocab._last_seen, vocab._pending, vocab.capacity)


def test_a_state_restored_like_an_earlier_one_equals_one_restored_alone() -> None:
    rng = random.Random(0)
    vocab = IdVocabulary(admit_after=2, expire_after_ms=50, chunk=4)
    restored = [IdVocabulary.from_state_dict(vocab.state_dict())]
    for step in range(300):
        now = step * 5
        if rng.random() < 0.1:
            vocab.expire(now_ms=now)
        elif rng.random() < 0.2:  # ids whose names extend others': x1, x12, x123
            vocab.observe(["x123"[: rng.randrange(2, 5)]] * 2, ts_ms=now)
        else:
            vocab.observe([f"i{rng.randrange(40)}" for _ in range(rng.randrange(4))], ts_ms=now)
        state = vocab.state_dict()
        alone = IdVocabulary.from_state_dict(state)
        like = IdVocabulary.from_state_dict(state, like=rng.choice(restored[-8:]))
        assert _tables(like) == _tables(alone)
        assert (like._ids, like._rows, sorted(like._free)) == (
            vocab._ids,
            vocab._rows,
            sorted(vocab._free),
        )
        restored.append(like)


def _expire_then(vocab: IdVocabulary, kept: list[str], admitted: list[str], at: int) -> None:
    """Free every row but those of `kept`, then admit `admitted` (into the freed rows first)."""
    vocab.observe(kept, ts_ms=at)
    vocab.expire(now_ms=at + 5)
    vocab.observe(admitted, ts_ms=at + 6)


@pytest.mark.parametrize(
    ("first", "kept", "admitted"),
    [
        (["x1"], [], ["x12", "y"]),  # the last id was replaced by a longer one, rows appended
        (["x1"], [], ["x12"]),  # the same, no row appended
        (["a"], ["a"], ["b", "c"]),  # rows appended, then freed below
    ],
)
def test_a_state_that_is_not_the_earlier_one_plus_rows_is_restored_as_it_is(
    first: list[str], kept: list[str], admitted: list[str]
) -> None:
    vocab = IdVocabulary(expire_after_ms=10, chunk=4)
    vocab.observe(first, ts_ms=0)
    before = IdVocabulary.from_state_dict(vocab.state_dict())
    _expire_then(vocab, kept, admitted, at=100)
    if kept:  # the appended rows go free while the earlier ones stay
        _expire_then(vocab, kept, [], at=200)
    state = vocab.state_dict()
    restored = IdVocabulary.from_state_dict(state, like=before)
    assert _tables(restored) == _tables(IdVocabulary.from_state_dict(state))


def test_a_vocabulary_that_only_gained_ids_extends_the_tables_of_the_one_before() -> None:
    vocab = IdVocabulary(chunk=4)
    vocab.observe(["item-a", "item-b"], ts_ms=0)
    before = IdVocabulary.from_state_dict(vocab.state_dict())
    vocab.observe(["item-c", "item-a"], ts_ms=1)
    after = IdVocabulary.from_state_dict(vocab.state_dict(), like=before)
    assert after.lookup(["item-a", "item-b", "item-c"]).tolist() == [1, 2, 3]
    assert after.id_of(1) is before.id_of(1)  # reused, not decoded again
    assert after._rows is not before._rows  # a copy: the older version keeps its own


def test_a_vocabulary_changed_since_it_was_restored_is_not_extended() -> None:
    vocab = IdVocabulary(chunk=4)
    vocab.observe(["item-a"], ts_ms=0)
    before = IdVocabulary.from_state_dict(vocab.state_dict())
    before.observe(["item-z"], ts_ms=1)  # its tables no longer match the state it came from
    vocab.observe(["item-b"], ts_ms=1)
    after = IdVocabulary.from_state_dict(vocab.state_dict(), like=before)
    assert after.lookup(["item-a", "item-b", "item-z"]).tolist() == [1, 2, 0]
    assert after.id_of(1) is not before.id_of(1)


def test_a_restored_vocabulary_unpacks_when_ids_were_seen_only_once_it_needs_them() -> None:
    vocab = IdVocabulary(expire_after_ms=10)
    vocab.observe(["item-a", "item-b"], ts_ms=1_700_000_000_000)
    restored = IdVocabulary.from_state_dict(vocab.state_dict())
    assert restored.lookup(["item-b"]).tolist() == [2]  # what a serving process asks
    assert isinstance(restored._seen, torch.Tensor)  # 1M ints were ~0.1 s of each load
    again = IdVocabulary.from_state_dict(restored.state_dict())
    assert again._last_seen == vocab._last_seen
    assert restored.expire(now_ms=1_700_000_000_011) == ["item-a", "item-b"]
    assert restored._last_seen == vocab._last_seen


def test_a_saved_state_packs_every_row_as_it_is_now_whatever_was_packed_before() -> None:
    """The ids packed by the last save are kept and only rows appended since are packed: the
    state must still hold every row as it is, through expiries, reused rows, ids holding a
    NUL (not packed by joining), saves at random moments and a restore in between."""
    rng = random.Random(1)
    vocab = IdVocabulary(admit_after=1, expire_after_ms=40, chunk=4)
    for step in range(400):
        now = step * 5
        if rng.random() < 0.08:
            vocab.expire(now_ms=now)
        elif rng.random() < 0.03:
            vocab.observe([f"nul\x00{rng.randrange(3)}"], ts_ms=now)
        else:
            vocab.observe([f"é{rng.randrange(60)}" for _ in range(rng.randrange(4))], ts_ms=now)
        if rng.random() < 0.3:
            state = vocab.state_dict()
            assert unpack_strings(state["ids"]) == ["" if i is None else i for i in vocab._ids]
            assert unpack_bools(state["owned"]) == [i is not None for i in vocab._ids]
            if rng.random() < 0.1:  # a trainer resumed from it goes on from its packed ids
                vocab = IdVocabulary.from_state_dict(state)
