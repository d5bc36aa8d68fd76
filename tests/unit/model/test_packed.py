"""Per-item columns of saved states as tensors: what a serving process reads each version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from model.checkpoints import CheckpointStore
from model.interaction import Interaction
from model.packed import (
    pack_bools,
    pack_ints,
    pack_strings,
    unpack_bools,
    unpack_ints,
    unpack_strings,
)
from model.ranking import Ranking
from model.serving_models import ServingModels
from model.trainer import OnlineTrainer, TrainerConfig, TrainingExample
from model.two_tower import TwoTowerConfig, TwoTowerRecommender
from model.vocabulary import IdVocabulary

ITEMS = 300


def _lists(value: Any, path: str = "") -> list[str]:
    """Where `value` holds a list or tuple of more than a few elements."""
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in _lists(v, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        if len(value) > 16:
            return [f"{path} ({len(value)} elements)"]
        return [found for n, v in enumerate(value) for found in _lists(v, f"{path}[{n}]")]
    return []


def _trained(tmp_path: Path) -> tuple[CheckpointStore, int, Ranking]:
    model = TwoTowerRecommender(TwoTowerConfig(dim=8, heads=2, max_history=4), seed=0)
    trainer = OnlineTrainer(model, TrainerConfig(sampled_negatives=8), torch.device("cpu"))
    ranking = Ranking()
    ranking.items.set("i0", "shoes", "acme")
    history: list[Interaction] = []
    batch = []
    for n in range(ITEMS):
        event = Interaction(f"u{n % 7}", f"i{n}", "click", 1_000 * n)
        batch.append(TrainingExample(tuple(history[-4:]), event))
        history.append(event)
    trainer.learn_many(batch)
    ranking.observe(batch)
    store = CheckpointStore(tmp_path)
    return store, store.save(trainer, {}, ranking=ranking.state_dict()), ranking


def test_a_served_version_holds_its_item_columns_as_tensors_not_lists(tmp_path: Path) -> None:
    store, version, _ = _trained(tmp_path)
    payload = torch.load(store._model_path(version), map_location="cpu", weights_only=True)
    assert _lists(payload) == []


def test_a_served_version_loads_what_was_saved(tmp_path: Path) -> None:
    store, version, ranking = _trained(tmp_path)
    model = ServingModels(store).get(version)
    loaded = ServingModels(store).ranking(version)
    assert model is not None
    assert loaded is not None
    assert len(model.vocabulary) > ITEMS // 2
    assert loaded.covisit.neighbour_rows() == ranking.covisit.neighbour_rows()
    assert loaded.popularity.catalogue.ids == ranking.popularity.catalogue.ids
    assert loaded.items.category_of == {"i0": "shoes"}


def test_columns_round_trip_whatever_the_ids_hold() -> None:
    ids = ["a", "", "é\u00e9\U0001f600", "with\nnewline", "nul\x00inside", "x" * 128]
    assert unpack_strings(pack_strings(ids)) == ids
    assert unpack_strings(pack_strings(ids[:4])) == ids[:4]  # no NUL: joined by NUL
    for few in ([], [""], ["", ""], ["\x00"]):
        assert unpack_strings(pack_strings(few)) == few
    assert unpack_ints(pack_ints([3, -1, 2**40])) == [3, -1, 2**40]
    assert unpack_ints(pack_ints([])) == []
    assert unpack_bools(pack_bools([True, False])) == [True, False]


def test_states_saved_as_lists_before_still_load() -> None:
    assert unpack_strings(["a", "b"]) == ["a", "b"]
    assert unpack_ints([1, 2]) == [1, 2]
    assert unpack_bools([False]) == [False]
    vocabulary = IdVocabulary()
    vocabulary.observe(["a", "b"], 5)
    state = vocabulary.state_dict()
    as_lists = {
        key: (
            unpack_strings(value)
            if isinstance(value, dict)
            else value.tolist()
            if isinstance(value, torch.Tensor)
            else value
        )
        for key, value in state.items()
    }
    assert IdVocabulary.from_state_dict(as_lists).state_dict().keys() == state.keys()
    assert "a" in IdVocabulary.from_state_dict(as_lists)
