"""Models of recent versions, loaded from checkpoints for serving."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from model import serving_models
from model.checkpoints import CheckpointStore
from model.interaction import Interaction
from model.serving_models import ServingModels
from model.trainer import OnlineTrainer, TrainerConfig, TrainingExample
from model.two_tower import TwoTowerConfig, TwoTowerRecommender, newest_ms


def _store(tmp_path: Path) -> tuple[CheckpointStore, OnlineTrainer, list[int]]:
    model = TwoTowerRecommender(TwoTowerConfig(dim=8, heads=2, max_history=4), seed=0)
    trainer = OnlineTrainer(model, TrainerConfig(sampled_negatives=8), torch.device("cpu"))
    store = CheckpointStore(tmp_path, keep=5)
    versions = []
    for n in range(3):
        trainer.learn_one(TrainingExample((), Interaction("u", f"i{n}", "click", n)))
        versions.append(store.save(trainer, {}))
    return store, trainer, versions


def test_a_version_embeds_users_as_the_trainer_model_of_that_version_did(tmp_path: Path) -> None:
    store, trainer, versions = _store(tmp_path)
    history = [Interaction("u", "i0", "click", 5), Interaction("u", "i2", "click", 9)]
    vectors = ServingModels(store).embed(versions[-1], [history], [newest_ms(history, 0)])
    expected = trainer.model.embed_users([history], 9).numpy()
    assert vectors is not None
    assert vectors.dtype.name == "float32"
    torch.testing.assert_close(torch.from_numpy(vectors), torch.from_numpy(expected))


def test_a_version_not_on_disk_is_none_and_only_the_newest_few_stay_loaded(
    tmp_path: Path,
) -> None:
    store, _, versions = _store(tmp_path)
    models = ServingModels(store, keep=2)
    assert models.get(999) is None
    for version in versions:
        assert models.get(version) is not None
    assert models.loaded == versions[-2:]


def test_ages_are_measured_from_the_newest_interaction() -> None:
    history = [Interaction("u", "a", "click", 5), Interaction("u", "b", "order", 42)]
    assert newest_ms(history, 0) == 42
    assert newest_ms([], 7) == 7


def test_a_version_not_on_disk_is_looked_for_again_only_once_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _, versions = _store(tmp_path)
    reads: list[int] = []
    load = store.load_serving

    def counted(version: int, like: TwoTowerRecommender | None = None) -> object:
        reads.append(version)
        return load(version, like)

    monkeypatch.setattr(store, "load_serving", counted)
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    models = ServingModels(store)
    assert models.get(999) is None
    assert models.ranking(999) is None  # every request asks: the disk is not read again
    assert reads == [999]
    now[0] += serving_models.RETRY_MISSING_S
    assert models.get(999) is None
    assert models.get(versions[-1]) is not None
    assert reads == [999, 999, versions[-1]]


def test_loading_a_version_never_holds_up_asking_for_a_loaded_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _, versions = _store(tmp_path)
    models = ServingModels(store, keep=3)
    assert models.get(versions[0]) is not None
    release = threading.Event()
    load = store.load_serving

    def slow(version: int, like: TwoTowerRecommender | None = None) -> object:
        release.wait(10)  # a big checkpoint being read, as an API replica does a version a second
        return load(version, like)

    monkeypatch.setattr(store, "load_serving", slow)
    loading = threading.Thread(target=models.get, args=(versions[1],))
    loading.start()
    try:
        time.sleep(0.1)
        began = time.monotonic()
        assert models.ranking(versions[0]) is None  # what a request asks, on the event loop
        assert time.monotonic() - began < 1.0
    finally:
        release.set()
        loading.join()
    assert models.loaded == [versions[0], versions[1]]


def test_a_version_reuses_the_id_tables_of_the_one_loaded_before_it(tmp_path: Path) -> None:
    store, trainer, versions = _store(tmp_path)
    models = ServingModels(store, keep=3)
    first = models.get(versions[-1])
    assert first is not None
    trainer.learn_one(TrainingExample((), Interaction("u", "i-new", "click", 9)))  # appends
    nxt = models.get(store.save(trainer, {}))
    assert nxt is not None
    assert nxt.vocabulary.lookup(["i0", "i2", "i-new"]).tolist() == [1, 3, 4]
    assert nxt.vocabulary.id_of(2) is first.vocabulary.id_of(2)  # taken, not decoded again
