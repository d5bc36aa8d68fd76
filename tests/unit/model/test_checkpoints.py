"""Checkpoints: round trip, last-N retention, rollback, monotonic versions, safe loading."""

from __future__ import annotations

import errno
import math
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from model import checkpoints
from model.checkpoints import CheckpointError, CheckpointStore
from model.device import choose_device
from model.interaction import Interaction
from model.trainer import OnlineTrainer, TrainerConfig, TrainingExample, model_from_state
from model.two_tower import TwoTowerConfig, TwoTowerRecommender

CPU = choose_device("cpu")


def _examples(start: int, n: int = 24) -> list[TrainingExample]:
    out = []
    for k in range(start, start + n):
        history = tuple(
            Interaction("u", f"i{(k - j) % 15}", "click", k * 10 - j) for j in (3, 2, 1)
        )
        out.append(TrainingExample(history, Interaction("u", f"i{k % 15}", "order", k * 10)))
    return out


def _trainer() -> OnlineTrainer:
    """Without replay, so that a resumed trainer must continue exactly (replay is not saved)."""
    model = TwoTowerRecommender(TwoTowerConfig(dim=8, max_history=4, layers=1), seed=0)
    return OnlineTrainer(model, TrainerConfig(sampled_negatives=8, replay_ratio=0.0), CPU)


_ITEMS = ["i1", "i7", "unknown"]


def _user() -> tuple[list[list[Interaction]], int]:
    return [[Interaction("u", "i1", "click", 0), Interaction("u", "i2", "order", 5)]], 100


def _embeddings(trainer: OnlineTrainer) -> torch.Tensor:
    users = trainer.model.embed_users(*_user())
    return torch.cat([users, trainer.model.embed_items(_ITEMS)])


def test_a_checkpoint_round_trip_restores_model_vocabulary_and_position(tmp_path: Path) -> None:
    trainer = _trainer()
    trainer.learn_many(_examples(0))
    store = CheckpointStore(tmp_path)
    version = store.save(trainer, {"clicks/0": 41, "orders/2": 7})
    loaded = store.load(device=CPU)
    assert loaded.version == version == 1
    assert loaded.position == {"clicks/0": 41, "orders/2": 7}
    assert torch.allclose(_embeddings(loaded.trainer), _embeddings(trainer))
    items = ["i0", "i9", "zz"]
    assert loaded.trainer.model.vocabulary.lookup(items).tolist() == (
        trainer.model.vocabulary.lookup(items).tolist()
    )
    trainer.learn_many(_examples(24))
    loaded.trainer.learn_many(_examples(24))
    assert torch.allclose(_embeddings(loaded.trainer), _embeddings(trainer), atol=1e-5)


def test_a_resumed_trainer_gives_new_items_the_rows_the_uninterrupted_one_gives(
    tmp_path: Path,
) -> None:
    trainer = _trainer()
    trainer.learn_many(_examples(0))
    store = CheckpointStore(tmp_path)
    store.save(trainer, {})
    resumed = store.load(device=CPU).trainer
    fresh = [
        TrainingExample((), Interaction("u", f"new{n}", "click", 10_000 + n)) for n in range(5)
    ]
    for each in (trainer, resumed):
        each._admit(fresh)
    rows = trainer.model.vocabulary.lookup([e.target.item_id for e in fresh])
    assert resumed.model.vocabulary.lookup([e.target.item_id for e in fresh]).tolist() == (
        rows.tolist()
    )
    weights = trainer.model.item_embedding.weight
    assert torch.equal(resumed.model.item_embedding.weight[rows], weights[rows])


def test_only_the_last_n_versions_are_kept(tmp_path: Path) -> None:
    trainer = _trainer()
    store = CheckpointStore(tmp_path, keep=2)
    for step in range(4):
        trainer.learn_many(_examples(step * 24))
        store.save(trainer, {"p": step})
    assert store.versions() == [3, 4]
    assert store.current() == 4


def test_rollback_serves_an_earlier_version_and_versions_keep_growing(tmp_path: Path) -> None:
    trainer = _trainer()
    store = CheckpointStore(tmp_path)
    trainer.learn_many(_examples(0))
    store.save(trainer, {"p": 1})
    first = _embeddings(trainer)
    trainer.learn_many(_examples(24))
    store.save(trainer, {"p": 2})
    store.rollback(1)
    restored = store.load()
    assert restored.version == 1
    assert restored.position == {"p": 1}
    assert torch.allclose(_embeddings(restored.trainer), first)
    assert store.save(restored.trainer, {"p": 3}) == 3
    with pytest.raises(CheckpointError):
        store.rollback(99)


def test_files_that_need_pickle_are_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    torch.save({"format": 1, "evil": Path("/")}, tmp_path / "checkpoint-00000001.pt")
    with pytest.raises(CheckpointError, match="safely"):
        store.load(1)
    with pytest.raises(CheckpointError, match="not in"):
        store.load(2)


@pytest.mark.parametrize(
    "failure",
    [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("unexpected pos 298752")],
)
def test_a_failed_write_keeps_the_last_version_current_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    trainer = _trainer()
    store = CheckpointStore(tmp_path)
    store.save(trainer, {"clicks/0": 1})
    real_save = torch.save

    def disk_full_on_the_big_file(payload: dict[str, object], path: Path) -> None:
        if "extra" in payload and "checkpoint" in path.name:
            path.write_bytes(b"half")
            raise failure
        real_save(payload, path)

    monkeypatch.setattr(torch, "save", disk_full_on_the_big_file)
    with pytest.raises(CheckpointError, match=r"cannot write version 2.*version 1 stays current"):
        store.save(trainer, {"clicks/0": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert store.current() == 1
    assert store.load(device=CPU).position == {"clicks/0": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "CURRENT",
        "checkpoint-00000001.pt",
        "items-00000001.pt",  # version 1's item table
        "model-00000001.pt",
    ]
    assert store.save(trainer, {"clicks/0": 3}) == 2


def test_a_truncated_current_checkpoint_falls_back_to_the_previous_version_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trainer = _trainer()
    store = CheckpointStore(tmp_path)
    for step in range(3):
        trainer.learn_many(_examples(step * 24))
        store.save(trainer, {"p": step})
    current = tmp_path / "checkpoint-00000003.pt"
    assert current.exists()
    current.write_bytes(current.read_bytes()[:100])  # a crash mid-write without fsync
    restored = store.load()
    assert restored.version == 2
    assert restored.position == {"p": 1}
    assert "version 3" in caplog.text
    assert "falling back to version 2" in caplog.text
    with pytest.raises(CheckpointError):
        store.load(3)  # asked for by number: no silent substitute


def test_besides_the_newest_one_version_a_minute_of_the_history_window_is_kept(
    tmp_path: Path,
) -> None:
    """A version a second and `keep=2` would leave two seconds to roll back to."""
    now = [10_000.0]
    store = CheckpointStore(tmp_path, keep=2, history_s=180, clock=lambda: now[0])
    trainer = _trainer()
    for step in range(8):  # versions 1..8 written 50 s apart: ages 350, 300, ..., 0 s
        store.save(trainer, {"p": step})
        stamp = now[0]
        os.utime(tmp_path / f"checkpoint-{step + 1:08d}.pt", (stamp, stamp))
        now[0] += 50
    now[0] -= 50
    # ages: v8 0 s, v7 50, v6 100, v5 150, v4 200 (outside 180 s): minutes 0, 0, 1, 2
    assert store.versions() == [5, 6, 7, 8]


def test_versions_between_full_states_serve_but_are_neither_resumed_from_nor_rolled_back_to(
    tmp_path: Path,
) -> None:
    store = CheckpointStore(tmp_path, keep=2, state_every_s=60)
    trainer = _trainer()
    assert store.state_due()  # nothing on disk: the first version carries the full state
    trainer.learn_many(_examples(0))
    assert store.save(trainer, {"p": 1}, {"mine": 1}) == 1
    full = _embeddings(trainer)
    assert not store.state_due()
    for step in range(2, 6):  # each serves; the newest `keep` of them stay on disk
        trainer.learn_many(_examples(step * 24))
        assert store.save(trainer, {"p": step}, full=False) == step
    latest = _embeddings(trainer)
    assert store.versions() == [1]
    assert store.current() == 1
    assert sorted(p.name for p in tmp_path.glob("model-*.pt")) == [
        "model-00000001.pt",
        "model-00000004.pt",
        "model-00000005.pt",
    ]
    model, _ = store.load_serving(5)
    assert torch.allclose(
        torch.cat([model.embed_users(*_user()), model.embed_items(_ITEMS)]), latest
    )
    resumed = store.load()  # the newest full state, with its position and caller state
    assert (resumed.version, resumed.position, resumed.extra) == (1, {"p": 1}, {"mine": 1})
    assert torch.allclose(_embeddings(resumed.trainer), full)
    with pytest.raises(CheckpointError, match="not on disk"):
        store.rollback(5)
    written = time.time() - 60  # the full state on disk is a minute old
    os.utime(tmp_path / "checkpoint-00000001.pt", (written, written))
    assert store.state_due()
    assert store.save(resumed.trainer, {"p": 1}) == 6  # above every version ever saved
    assert store.current() == 6
    assert not store.state_due()
    reopened = CheckpointStore(tmp_path, keep=2, state_every_s=60)
    assert not reopened.state_due()  # it knows when the last full state was written


def test_a_model_built_from_a_live_state_copies_it_and_one_read_from_disk_takes_it() -> None:
    """A state that a live trainer still holds must be copied (its next step would move the
    new model too); one just read from disk is nobody else's, and copying its item table was
    a quarter of a serving process's load of each version at 1M items."""
    trainer = _trainer()
    trainer.learn_many(_examples(0))
    state = trainer.state_dict()
    table = state["model"]["item_embedding.weight"]
    copied = model_from_state(state)
    assert copied.item_embedding.weight.data_ptr() != table.data_ptr()
    trainer.learn_many(_examples(24))
    assert not torch.equal(copied.item_embedding.weight, trainer.model.item_embedding.weight)
    taken = model_from_state(state, take=True)
    assert taken.item_embedding.weight.data_ptr() == table.data_ptr()
    assert isinstance(taken.item_embedding.weight, torch.nn.Parameter)


def _mapped(path: Path) -> bool:
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


def test_a_served_version_maps_its_file_and_serves_on_once_the_file_is_pruned(
    tmp_path: Path,
) -> None:
    """Every serving process on a host shares the pages of a version's item table (one copy
    of a 277 MB table at 1M items, not one a process) and reads only the rows it touches."""
    store = CheckpointStore(tmp_path, keep=1)
    trainer = _trainer()
    trainer.learn_many(_examples(0))
    version = store.save(trainer, {}, full=False)
    expected = _embeddings(trainer)
    model, _ = store.load_serving(version)
    path = tmp_path / f"model-{version:08d}.pt"
    assert _mapped(path)
    trainer.learn_many(_examples(24))
    store.save(trainer, {}, full=False)
    store.save(trainer, {})
    assert not path.exists()  # pruned: the mapping keeps its pages
    assert torch.allclose(
        torch.cat([model.embed_users(*_user()), model.embed_items(_ITEMS)]), expected
    )
    del model
    resumed = store.load()  # a trainer's state is read, not mapped: it will be written to
    assert not _mapped(tmp_path / f"checkpoint-{store.current():08d}.pt")
    assert resumed.version == store.current()


def test_a_saved_version_carries_no_checksum_that_no_reader_checks(tmp_path: Path) -> None:
    """`torch.load` never verifies the zip entries' CRC-32 (a flipped byte of a table loads),
    so computing it was time spent on every version for nothing."""
    store = CheckpointStore(tmp_path, keep=1)
    version = store.save(_trainer(), {})
    for name in (f"model-{version:08d}.pt", f"checkpoint-{version:08d}.pt"):
        with zipfile.ZipFile(tmp_path / name) as saved:
            assert {entry.CRC for entry in saved.infolist()} == {0}


def _serves(store: CheckpointStore, version: int, expected: torch.Tensor) -> bool:
    model, _ = store.load_serving(version)
    return torch.allclose(
        torch.cat([model.embed_users(*_user()), model.embed_items(_ITEMS)]), expected
    )


def _saved(tmp_path: Path, version: int) -> dict[str, Any]:
    payload: dict[str, Any] = torch.load(tmp_path / f"model-{version:08d}.pt", weights_only=True)
    return payload


def test_a_version_carries_the_item_rows_changed_since_its_base_and_serves_the_whole_table(
    tmp_path: Path,
) -> None:
    """At 1M items the table is 256 MB: written whole each version, it was most of a save."""
    store = CheckpointStore(tmp_path, keep=5)
    trainer = _trainer()
    trainer.learn_many(_examples(0))
    first = store.save(trainer, {}, full=False)
    at_first = _embeddings(trainer)
    trainer.learn_many(_examples(24, n=2))  # moves a few rows
    second = store.save(trainer, {}, full=False)
    items = _saved(tmp_path, second)["items"]
    rows = len(trainer.model.item_embedding.weight)
    assert items["base"] == first
    assert 0 < len(items["rows"]) < rows
    assert "item_embedding.weight" not in _saved(tmp_path, second)["trainer"]["model"]
    assert _serves(store, second, _embeddings(trainer))
    served, _ = store.load_serving(second)
    base = tmp_path / f"items-{first:08d}.pt"
    assert _mapped(base)  # shared by every version over it, in every process
    written = torch.load(base, weights_only=True)["table"]
    assert torch.equal(served.item_embedding.weight, written)  # the changed rows go over it
    assert _serves(store, first, at_first)
    restarted = CheckpointStore(tmp_path, keep=5)  # a new trainer process: a new base first
    assert _saved(tmp_path, restarted.save(trainer, {}, full=False))["items"]["base"] == 3


def test_a_new_base_is_written_past_the_share_of_rows_changed_or_when_the_table_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(tmp_path, keep=5)
    trainer = _trainer()
    trainer.learn_many(_examples(0))
    store.save(trainer, {}, full=False)
    monkeypatch.setattr(checkpoints, "REBASE_SHARE", 0.0)
    assert _saved(tmp_path, store.save(trainer, {}, full=False))["items"]["base"] == 1  # no change
    trainer.learn_many(_examples(24, n=2))
    assert _saved(tmp_path, store.save(trainer, {}, full=False))["items"]["base"] == 3
    monkeypatch.setattr(checkpoints, "REBASE_SHARE", 1.0)
    rows = len(trainer.model.item_embedding.weight)
    new_ids = [f"new-{n}" for n in range(rows + 1)]  # past the table's capacity
    trainer.learn_many([TrainingExample((), Interaction("u", i, "click", 9)) for i in new_ids])
    assert len(trainer.model.item_embedding.weight) > rows
    assert _saved(tmp_path, store.save(trainer, {}, full=False))["items"]["base"] == 4
    assert _serves(store, 4, _embeddings(trainer))


def test_a_base_table_is_deleted_once_no_version_on_disk_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    trainer = _trainer()
    for step in range(6):
        monkeypatch.setattr(checkpoints, "REBASE_SHARE", 0.0 if step in (0, 3) else 1.0)
        trainer.learn_many(_examples(step * 24, n=2))
        store.save(trainer, {}, full=False)
    expected = _embeddings(trainer)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [
        "items-00000004.pt",
        "model-00000005.pt",
        "model-00000006.pt",
    ]
    assert _serves(store, 6, expected)
    (tmp_path / "items-00000004.pt").unlink()
    with pytest.raises(CheckpointError, match=r"items-00000004\.pt is not on disk"):
        store.load_serving(6)


def test_a_version_saved_with_its_table_inside_still_serves(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=5)
    trainer = _trainer()
    trainer.learn_many(_examples(0))
    version = store.save(trainer, {}, full=False)
    payload = _saved(tmp_path, version)
    payload["trainer"]["model"]["item_embedding.weight"] = trainer.model.item_embedding.weight
    del payload["items"]  # as versions were written before the base tables
    torch.save(payload, tmp_path / f"model-{version:08d}.pt")
    (tmp_path / f"items-{version:08d}.pt").unlink()
    assert _serves(store, version, _embeddings(trainer))


@pytest.mark.parametrize("dim", [4, 3])  # compared as 64-bit words, and as floats
def test_the_rows_a_version_carries_are_exactly_those_that_moved_from_its_base(dim: int) -> None:
    written = torch.randn(50, dim)
    table = written.clone()
    for row, column in ((7, dim - 1), (31, 0)):  # the smallest move a float can make
        table[row, column] = torch.nextafter(table[row, column], torch.tensor(math.inf))
    assert checkpoints._changed_rows(table, written).tolist() == [7, 31]
    assert checkpoints._changed_rows(written, written).tolist() == []
