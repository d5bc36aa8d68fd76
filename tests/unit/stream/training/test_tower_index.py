"""The trainer's tower candidates from an index (large catalogues) or exactly (small ones)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.interaction import Interaction
from model.ranked import MatrixTower, tower_views
from model.recommender import RecommendRequest, TwoTowerOnlineRecommender
from model.trainer import OnlineTrainer, TrainerConfig, TrainingExample
from model.two_tower import TwoTowerConfig, TwoTowerRecommender
from stream.config import Settings
from stream.training.tower_index import IndexedTowerViews, trainer_tower_views


def _tower() -> TwoTowerOnlineRecommender:
    model = TwoTowerRecommender(TwoTowerConfig(dim=8, heads=2, max_history=4), seed=0)
    trainer = OnlineTrainer(model, TrainerConfig(sampled_negatives=8), torch.device("cpu"))
    return TwoTowerOnlineRecommender(trainer)


def _clicks(items: range, ts_ms: int = 1_000) -> list[TrainingExample]:
    return [
        TrainingExample((), Interaction(f"u{n % 7}", f"i{n}", "click", ts_ms + n)) for n in items
    ]


def _requests() -> list[RecommendRequest]:
    history = tuple(e.target for e in _clicks(range(3)))
    return [RecommendRequest("u1", history, 10**9), RecommendRequest("u2", (), 10**9)]


def test_below_the_threshold_the_views_are_the_exact_ones() -> None:
    tower = _tower()
    tower.learn_many(_clicks(range(40)))
    views = IndexedTowerViews(8, "IDMap2,Flat", nearest=10, indexed_from=41)
    found = views(tower, _requests())
    assert all(isinstance(view, MatrixTower) for view in found)
    assert views.index.size == 0


@pytest.mark.parametrize(
    ("factory", "items"),
    [("IDMap2,Flat", 200), ("IDMap2,IVF16,Flat", 1_000)],  # IVF: every list probed = exact
)
def test_an_exhaustive_index_gives_the_same_nearest_items_and_scores_as_the_matrix(
    factory: str, items: int
) -> None:
    tower = _tower()
    tower.learn_many(_clicks(range(items)))
    views = IndexedTowerViews(8, factory, nearest=10, nprobe=16, indexed_from=items // 2)
    ids = [f"i{n}" for n in range(0, items, 7)] + ["never-seen"]
    for _ in range(2):  # again after the tower learned more (its vectors refreshed)
        for exact, indexed in zip(
            tower_views(tower, _requests()), views(tower, _requests()), strict=True
        ):
            assert exact is not None
            assert indexed is not None
            assert indexed.nearest(10) == exact.nearest(10)
            assert indexed.nearest(25) == exact.nearest(25)  # more than it searched for
            (want, want_known), (got, got_known) = exact.score(ids), indexed.score(ids)
            assert got_known.tolist() == want_known.tolist()
            assert got == pytest.approx(want, abs=1e-5)
        tower.learn_many(_clicks(range(items // 2, items + 100), ts_ms=10**6))  # moves, adds


def test_the_index_follows_the_tower_vectors_upserting_only_the_changed_ones() -> None:
    tower = _tower()
    tower.learn_many(_clicks(range(200)))
    views = IndexedTowerViews(8, "IDMap2,Flat", nearest=10, indexed_from=100)
    views(tower, _requests())
    writes = views.index.version
    views(tower, _requests())  # the tower's vectors did not refresh: nothing to write
    assert views.index.version == writes
    tower.learn_many(_clicks(range(150, 260), ts_ms=10**6))
    views(tower, _requests())
    found = tower.item_vectors()
    assert found is not None
    catalogue, vectors = found
    assert sorted(views.index.ids()) == sorted(catalogue.ids)
    held = views.index.vectors(catalogue.ids)
    assert np.allclose(held, vectors.numpy(), atol=1e-6)


def test_the_trainer_searches_as_the_replicas_do() -> None:
    assert trainer_tower_views(Settings()) is tower_views
    indexed = trainer_tower_views(Settings(index_factory="IDMap2,IVF1024,Flat", index_nprobe=8))
    assert isinstance(indexed, IndexedTowerViews)
    assert indexed.index.nprobe == 8
