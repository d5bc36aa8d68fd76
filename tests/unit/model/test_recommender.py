"""The two-tower model as an online recommender: its scores against every admitted item."""

from __future__ import annotations

from unittest.mock import patch

from model.device import choose_device
from model.interaction import Interaction
from model.recommender import (
    ITEMS_PER_REFRESH_EVENT,
    RecommendRequest,
    TwoTowerOnlineRecommender,
)
from model.trainer import OnlineTrainer, TrainerConfig, TrainingExample
from model.two_tower import TwoTowerConfig, TwoTowerRecommender


def _clicks(items: range, ts_ms: int = 0) -> list[TrainingExample]:
    return [
        TrainingExample((), Interaction(f"u{n % 7}", f"i{n}", "click", ts_ms + n)) for n in items
    ]


def test_item_vectors_are_recomputed_once_a_share_of_the_catalogue_has_been_learned() -> None:
    """Scoring every item costs the whole catalogue's item tower: the trainer (which scores
    each batch it learns, for the ranker) recomputes it once the events learned since reach
    1/ITEMS_PER_REFRESH_EVENT of the catalogue's size, a bounded cost per event at any size,
    and at least once per evaluation batch on catalogues up to 64 x that batch."""
    model = TwoTowerRecommender(TwoTowerConfig(dim=8, heads=2, max_history=4), seed=0)
    trainer = OnlineTrainer(model, TrainerConfig(sampled_negatives=8), choose_device("cpu"))
    tower = TwoTowerOnlineRecommender(trainer)
    catalogue = 8 * ITEMS_PER_REFRESH_EVENT  # 8 events learned refresh it
    tower.learn_many(_clicks(range(catalogue)))
    request = [RecommendRequest("u1", (), 10**9)]
    with patch.object(model, "catalogue", wraps=model.catalogue) as computed:
        tower.scores(request)
        for n in range(7):
            tower.learn_many(_clicks(range(n, n + 1), ts_ms=10**6))  # items it knows
            tower.scores(request)
        assert computed.call_count == 1
        tower.learn_many(_clicks(range(7, 8), ts_ms=10**6))
        scored = tower.scores(request)
        assert computed.call_count == 2
    assert scored is not None
    assert len(scored[0]) == scored[1].shape[1] == catalogue
