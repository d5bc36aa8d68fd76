"""The recommender as evaluated: the two-tower model's nearest items plus every other
candidate source, ranked by the online ranker (`model.ranking.Ranking`, which API replicas
load from each model version and apply the same way)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from model.ranking import CandidateConfig, Ranking, TowerView, Vector
from model.recommender import RecommendRequest, SystemKind, TwoTowerOnlineRecommender
from model.sources import best_first
from model.trainer import TrainingExample


class MatrixTower:
    """A `TowerView` of one row of a [requests, items] score matrix (evaluation, training)."""

    def __init__(
        self, scores: npt.NDArray[np.float32], ids: Sequence[str], column: Mapping[str, int]
    ) -> None:
        self._scores, self._ids, self._column = scores, ids, column

    def nearest(self, n: int) -> list[str]:
        return [self._ids[c] for c in best_first(self._scores, n)]

    def score(self, ids: Sequence[str]) -> tuple[Vector, npt.NDArray[np.bool_]]:
        columns = np.fromiter(
            (self._column.get(i, -1) for i in ids), dtype=np.int64, count=len(ids)
        )
        known = columns >= 0
        scores = np.zeros(len(ids))
        scores[known] = self._scores[columns[known]]
        return scores, known


TowerViews = Callable[
    [TwoTowerOnlineRecommender | None, Sequence[RecommendRequest]], list[TowerView | None]
]


def tower_views(
    tower: TwoTowerOnlineRecommender | None, requests: Sequence[RecommendRequest]
) -> list[TowerView | None]:
    """The tower's view of each request (None each without a tower or any admitted item):
    exact, from the scores of every item (a [requests, items] matrix)."""
    scored = None if tower is None else tower.scores(requests)
    if scored is None:
        return [None] * len(requests)
    catalogue, scores = scored
    return [MatrixTower(row, catalogue.ids, catalogue.column) for row in scores]


class RankedRecommender:
    """Multi-source candidates + online ranker; `tower=None` leaves the two-tower source out.
    `tower_side` gives the tower's side of each request: exact by default; a trainer at a large
    catalogue searches an index instead, as the replicas do."""

    kind: SystemKind = "recommender"

    def __init__(
        self,
        tower: TwoTowerOnlineRecommender | None,
        config: CandidateConfig | None = None,
        *,
        name: str = "recommender",
        seed: int = 0,
        tower_side: TowerViews = tower_views,
    ) -> None:
        self.name = name
        self.tower = tower
        self.tower_side = tower_side
        self.ranking = Ranking(config, seed=seed)

    def set_items(self, metadata: Mapping[str, Mapping[str, str]]) -> None:
        """Item metadata (category, brand, ...): features of the tower's item side, the
        cold-start source (items of the user's recent categories with few interactions yet),
        and the category and brand affinity features."""
        for item_id, features in metadata.items():
            self.ranking.items.set(item_id, features.get("category"), features.get("brand"))
            if self.tower is not None and self.tower.model.config.feature_fields:
                self.tower.model.set_item_features(item_id, features)

    def views(self) -> list[_View]:
        """The ablations, sharing this recommender's state: the tower alone, and the ranker
        over every source but the tower. They learn nothing themselves."""
        views = [_View(self, "no_tower", use_tower=False)]
        if self.tower is not None:
            views.insert(0, _View(self, "tower_only", use_tower=True, tower_only=True))
        return views

    def recommend_many(self, requests: Sequence[RecommendRequest], k: int) -> list[list[str]]:
        return self._recommend(requests, k, use_tower=True)

    def _recommend(
        self, requests: Sequence[RecommendRequest], k: int, *, use_tower: bool
    ) -> list[list[str]]:
        towers = self.tower_side(self.tower if use_tower else None, requests)
        return [
            [found.item_id for found in self.ranking.rank(request, tower, k)]
            for request, tower in zip(requests, towers, strict=True)
        ]

    def learn_many(self, batch: Sequence[TrainingExample]) -> None:
        requests = [RecommendRequest(e.target.user_id, e.history, e.target.ts_ms) for e in batch]
        towers = self.tower_side(self.tower, requests)
        for request, tower, example in zip(requests, towers, batch, strict=True):
            self.ranking.learn(request, tower, example.target.item_id)
        if self.tower is not None:
            self.tower.learn_many(batch)
        self.ranking.observe(batch)


class _View:
    """An ablation of a `RankedRecommender`, evaluated beside it on its state."""

    kind: SystemKind = "ablation"

    def __init__(
        self, owner: RankedRecommender, name: str, *, use_tower: bool, tower_only: bool = False
    ) -> None:
        self.owner, self.name = owner, name
        self.use_tower, self.tower_only = use_tower, tower_only

    def recommend_many(self, requests: Sequence[RecommendRequest], k: int) -> list[list[str]]:
        if self.tower_only and self.owner.tower is not None:
            return self.owner.tower.recommend_many(requests, k)
        return self.owner._recommend(requests, k, use_tower=self.use_tower)

    def learn_many(self, batch: Sequence[TrainingExample]) -> None:
        """Nothing: the owner learns."""
