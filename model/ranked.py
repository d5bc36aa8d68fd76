"""The recommender as served: candidates from several online sources, ranked by an online
ranker trained on the same stream.

Sources: the two-tower model's nearest items, co-visitation neighbours of the user's recent
items, the user's own past items, all-time and trending popularity. Every candidate gets one
feature row (the scores of each source and which sources proposed it); `OnlineRanker` learns
from each event, before it is learned anywhere else, which candidate the user took.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.ranker import OnlineRanker
from model.recommender import RecommendRequest, SystemKind, TwoTowerOnlineRecommender
from model.sources import CoVisitation, ItemPopularity, top_by_score
from model.trainer import TrainingExample
from model.two_tower import newest_ms

FEATURES = (
    "tower",
    "tower_known",
    "covisit",
    "covisit_rank",
    "own_count",
    "own_recent_day",
    "own_recent_month",
    "own_last",
    "popularity",
    "trending",
    "item_age",
    "from_tower",
    "from_covisit",
    "from_own",
    "from_popular",
)
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class CandidateConfig:
    """How many candidates each source proposes, and the ranker's size."""

    tower: int = 100
    covisit: int = 100
    own: int = 50
    popular: int = 20
    trending: int = 20
    recent: int = 10
    ranker_hidden: int = 16
    ranker_learning_rate: float = 0.05


@dataclass(frozen=True, slots=True)
class _TowerScores:
    """The tower's view of one batch: each request's best items, every admitted item's score."""

    best: list[list[str]]
    scores: npt.NDArray[np.float32]
    column: dict[str, int]


@dataclass(frozen=True, slots=True)
class _Candidates:
    ids: list[str]
    features: npt.NDArray[np.float64]


class RankedRecommender:
    """Multi-source candidates + online ranker; `tower=None` leaves the two-tower source out."""

    kind: SystemKind = "recommender"

    def __init__(
        self,
        tower: TwoTowerOnlineRecommender | None,
        config: CandidateConfig | None = None,
        *,
        name: str = "recommender",
        seed: int = 0,
    ) -> None:
        self.name = name
        self.tower = tower
        self.config = config or CandidateConfig()
        self.covisit = CoVisitation()
        self.popularity = ItemPopularity()
        self.ranker = OnlineRanker(
            len(FEATURES),
            self.config.ranker_hidden,
            self.config.ranker_learning_rate,
            seed=seed,
        )
        self.no_tower_ranker = OnlineRanker(
            len(FEATURES),
            self.config.ranker_hidden,
            self.config.ranker_learning_rate,
            seed=seed,
        )

    def views(self) -> list[_View]:
        """The ablations, sharing this recommender's state: the tower alone, and the ranker
        over every source but the tower. They learn nothing themselves."""
        views = [_View(self, "no_tower", use_tower=False)]
        if self.tower is not None:
            views.insert(0, _View(self, "tower_only", use_tower=True, tower_only=True))
        return views

    def recommend_many(self, requests: Sequence[RecommendRequest], k: int) -> list[list[str]]:
        return self._recommend(requests, k, use_tower=self.tower is not None)

    def _recommend(
        self, requests: Sequence[RecommendRequest], k: int, *, use_tower: bool
    ) -> list[list[str]]:
        tower = self._tower_scores(requests) if use_tower else None
        ranker = self.ranker if use_tower else self.no_tower_ranker
        out: list[list[str]] = []
        for row, request in enumerate(requests):
            found = self._candidates(request, tower, row, request.exclude)
            if not found.ids:
                out.append([])
                continue
            scores = ranker.scores(found.features)
            best = np.argsort(-scores, kind="stable")[:k]
            out.append([found.ids[c] for c in best])
        return out

    def learn_many(self, batch: Sequence[TrainingExample]) -> None:
        requests = [RecommendRequest(e.target.user_id, e.history, e.target.ts_ms) for e in batch]
        tower = self._tower_scores(requests) if self.tower is not None else None
        for row, (request, example) in enumerate(zip(requests, batch, strict=True)):
            item = example.target.item_id
            if tower is not None:
                found = self._candidates(request, tower, row, frozenset())
                if item in found.ids:
                    self.ranker.learn(found.features, found.ids.index(item))
            plain = self._candidates(request, None, row, frozenset())
            if item in plain.ids:
                self.no_tower_ranker.learn(plain.features, plain.ids.index(item))
        if self.tower is not None:
            self.tower.learn_many(batch)
        for example in batch:
            self.covisit.learn(example.history, example.target)
            self.popularity.add(example.target.item_id, example.target.ts_ms)

    def _tower_scores(self, requests: Sequence[RecommendRequest]) -> _TowerScores | None:
        """Per request: the tower's best items and every admitted item's score."""
        if self.tower is None:
            return None
        model = self.tower.model
        ids, vectors = model.catalogue()
        if not ids:
            return None
        users = model.embed_users(
            [r.history for r in requests], [newest_ms(r.history, r.now_ms) for r in requests]
        )
        scores = (users @ vectors.T).float().cpu().numpy()
        n = min(self.config.tower + 50, len(ids))
        best = np.argpartition(-scores, n - 1, axis=1)[:, :n]
        ranked = [
            [ids[c] for c in best[r][np.argsort(-scores[r, best[r]], kind="stable")]]
            for r in range(len(requests))
        ]
        return _TowerScores(ranked, scores, {item: c for c, item in enumerate(ids)})

    def _candidates(
        self,
        request: RecommendRequest,
        tower: _TowerScores | None,
        row: int,
        exclude: frozenset[str],
    ) -> _Candidates:
        config = self.config
        recent = [i.item_id for i in request.history[-config.recent :]]
        covisit = self.covisit.scores(recent)
        own_count = Counter(i.item_id for i in request.history)
        own_last: dict[str, int] = {i.item_id: i.ts_ms for i in request.history}
        order: dict[str, int] = {i.item_id: n for n, i in enumerate(reversed(request.history))}
        sources: dict[str, set[str]] = {}

        def propose(items: Sequence[str], source: str, limit: int) -> None:
            taken = 0
            for item in items:
                if taken >= limit:
                    break
                if item in exclude:
                    continue
                sources.setdefault(item, set()).add(source)
                taken += 1

        if tower is not None:
            propose(tower.best[row], "tower", config.tower)
        covisit_best = top_by_score(covisit, config.covisit + len(exclude))
        propose(covisit_best, "covisit", config.covisit)
        by_own = sorted(own_count, key=lambda i: (-own_count[i], order[i]))
        propose(by_own, "own", config.own)
        propose(self.popularity.top(config.popular + len(exclude)), "popular", config.popular)
        propose(
            self.popularity.top(config.trending + len(exclude), trending=True),
            "popular",
            config.trending,
        )
        ids = list(sources)
        features = np.zeros((len(ids), len(FEATURES)))
        if not ids:
            return _Candidates(ids, features)
        covisit_rank = {item: n for n, item in enumerate(covisit_best)}
        counts = self.popularity.counts
        trending = self.popularity.trending
        top_count = max(float(counts.max()), 1.0) if len(self.popularity.ids) else 1.0
        size = len(self.popularity.ids)
        top_trend = max(float(trending[:size].max()), 1e-12) if size else 1.0
        now = request.now_ms
        column_of = self.popularity.column
        for n, item in enumerate(ids):
            f = features[n]
            if tower is not None and item in tower.column:
                f[0] = float(tower.scores[row, tower.column[item]])
                f[1] = 1.0
            f[2] = math.log1p(100.0 * covisit.get(item, 0.0))
            f[3] = 1.0 / (1.0 + covisit_rank[item]) if item in covisit_rank else 0.0
            if item in own_count:
                age = max(now - own_last[item], 0)
                f[4] = math.log1p(own_count[item])
                f[5] = math.exp(-age / DAY_MS)
                f[6] = math.exp(-age / (30 * DAY_MS))
                f[7] = 1.0 / (1.0 + order[item])
            column = column_of.get(item)
            if column is not None:
                f[8] = math.log1p(counts[column]) / math.log1p(top_count)
                f[9] = float(trending[column]) / top_trend
                first = self.popularity.first_ms[column]
                f[10] = math.log1p(max(now - first, 0) / 3_600_000) / 10.0
            proposed = sources[item]
            f[11] = "tower" in proposed
            f[12] = "covisit" in proposed
            f[13] = "own" in proposed
            f[14] = "popular" in proposed
        return _Candidates(ids, features)


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
