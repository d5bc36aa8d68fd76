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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.interaction import own_items
from model.ranker import OnlineRanker
from model.recommender import RecommendRequest, SystemKind, TwoTowerOnlineRecommender
from model.sources import CoVisitation, ItemPopularity, top_by_score
from model.trainer import TrainingExample

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
    "category_affinity",
    "brand_affinity",
    "cold",
    "from_cold",
)
F = {name: column for column, name in enumerate(FEATURES)}
DAY_MS = 86_400_000
_TOWER, _COVISIT, _OWN, _POPULAR, _COLD = 1, 2, 4, 8, 16  # the sources that proposed an item
_TOWER_FEATURES = [F["tower"], F["tower_known"], F["from_tower"]]
_OTHER_SOURCES = [F["from_covisit"], F["from_own"], F["from_popular"], F["from_cold"]]


@dataclass(frozen=True, slots=True)
class CandidateConfig:
    """How many candidates each source proposes, and the ranker's size."""

    tower: int = 100
    covisit: int = 100
    own: int = 50
    popular: int = 20
    trending: int = 20
    cold: int = 20
    cold_max_interactions: int = 5
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
        self.category_of: dict[str, str] = {}
        self.brand_of: dict[str, str] = {}
        self.by_category: dict[str, list[str]] = {}
        hidden, rate = self.config.ranker_hidden, self.config.ranker_learning_rate
        self.ranker = OnlineRanker(len(FEATURES), hidden, rate, seed=seed)
        self.no_tower_ranker = OnlineRanker(len(FEATURES), hidden, rate, seed=seed)

    def set_items(self, metadata: Mapping[str, Mapping[str, str]]) -> None:
        """Item metadata (category, brand, ...): features of the tower's item side, the
        cold-start source (items of the user's recent categories with few interactions yet),
        and the category and brand affinity features."""
        for item_id, features in metadata.items():
            if "category" in features:
                self.category_of[item_id] = features["category"]
                self.by_category.setdefault(features["category"], []).append(item_id)
            if "brand" in features:
                self.brand_of[item_id] = features["brand"]
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
            found = self._candidates(request, tower, row, frozenset())
            if tower is not None and item in found.ids:
                self.ranker.learn(found.features, found.ids.index(item))
            plain = self._without_tower(found) if tower is not None else found
            if item in plain.ids:
                self.no_tower_ranker.learn(plain.features, plain.ids.index(item))
        if self.tower is not None:
            self.tower.learn_many(batch)
        for example in batch:
            self.covisit.learn(example.history, example.target)
            self.popularity.add(example.target.item_id, example.target.ts_ms)

    def _tower_scores(self, requests: Sequence[RecommendRequest]) -> _TowerScores | None:
        """Per request: the tower's best items and every admitted item's score."""
        scored = None if self.tower is None else self.tower.scores(requests)
        if scored is None:
            return None
        catalogue, scores = scored
        ids = catalogue.ids
        n = min(self.config.tower + 50, len(ids))
        best = np.argpartition(-scores, n - 1, axis=1)[:, :n]
        ranked = [
            [ids[c] for c in best[r][np.argsort(-scores[r, best[r]], kind="stable")]]
            for r in range(len(requests))
        ]
        return _TowerScores(ranked, scores, catalogue.column)

    def _candidates(
        self,
        request: RecommendRequest,
        tower: _TowerScores | None,
        row: int,
        exclude: frozenset[str],
    ) -> _Candidates:
        """Every source's proposals for one request (none in `exclude`), one feature row each."""
        config = self.config
        history = request.history
        covisit = self.covisit.scores([i.item_id for i in history[-config.recent :]])
        own_count = Counter(i.item_id for i in history)
        order: dict[str, int] = {}  # each own item's newest position, 0 = the latest touch
        for n, touched in enumerate(reversed(history)):
            order.setdefault(touched.item_id, n)
        own_last = {i.item_id: i.ts_ms for i in history}
        sources: dict[str, int] = {}  # item -> bit set of the sources that proposed it

        def propose(items: Sequence[str], source: int, limit: int) -> None:
            taken = 0
            for item in items:
                if taken >= limit:
                    break
                if item not in exclude:
                    sources[item] = sources.get(item, 0) | source
                    taken += 1

        if tower is not None:
            propose(tower.best[row], _TOWER, config.tower)
        covisit_best = top_by_score(covisit, config.covisit + len(exclude))
        propose(covisit_best, _COVISIT, config.covisit)
        newest_first = [i.item_id for i in reversed(history)]
        propose([item for item, _ in own_items(newest_first)], _OWN, config.own)
        popularity = self.popularity
        propose(popularity.top(config.popular + len(exclude)), _POPULAR, config.popular)
        trending = popularity.top(config.trending + len(exclude), trending=True)
        propose(trending, _POPULAR, config.trending)
        recent = [i.item_id for i in history[-config.recent :]]
        categories = Counter(self.category_of[i] for i in recent if i in self.category_of)
        brands = Counter(self.brand_of[i] for i in recent if i in self.brand_of)
        if categories:
            propose(self._cold(categories), _COLD, config.cold)
        ids = list(sources)
        features = np.zeros((len(ids), len(FEATURES)))
        if not ids:
            return _Candidates(ids, features)
        bits = np.fromiter(sources.values(), dtype=np.int64, count=len(ids))
        for name, bit in (
            ("from_tower", _TOWER),
            ("from_covisit", _COVISIT),
            ("from_own", _OWN),
            ("from_popular", _POPULAR),
            ("from_cold", _COLD),
        ):
            features[:, F[name]] = (bits & bit) > 0
        if recent:
            for n, item in enumerate(ids):
                category, brand = self.category_of.get(item), self.brand_of.get(item)
                if category is not None:
                    features[n, F["category_affinity"]] = categories[category] / len(recent)
                if brand is not None:
                    features[n, F["brand_affinity"]] = brands[brand] / len(recent)
        if tower is not None:
            columns = np.array([tower.column.get(i, -1) for i in ids])
            known = columns >= 0
            features[known, F["tower"]] = tower.scores[row, columns[known]]
            features[known, F["tower_known"]] = 1.0
        covisit_of = np.array([covisit.get(i, 0.0) for i in ids])
        features[:, F["covisit"]] = np.log1p(100.0 * covisit_of)
        position = {item: n for n, item in enumerate(ids)}
        for rank, item in enumerate(covisit_best):
            if item in position:
                features[position[item], F["covisit_rank"]] = 1.0 / (1.0 + rank)
        now = request.now_ms
        for item in own_count.keys() & position.keys():
            f = features[position[item]]
            age = max(now - own_last[item], 0)
            f[F["own_count"]] = math.log1p(own_count[item])
            f[F["own_recent_day"]] = math.exp(-age / DAY_MS)
            f[F["own_recent_month"]] = math.exp(-age / (30 * DAY_MS))
            f[F["own_last"]] = 1.0 / (1.0 + order[item])
        if len(popularity):
            columns = np.array([popularity.catalogue.column.get(i, -1) for i in ids])
            known = columns >= 0
            counts, trend = popularity.scores(), popularity.scores(trending=True)
            picked = columns[known]
            top = math.log1p(max(counts.max(), 1.0))
            features[known, F["popularity"]] = np.log1p(counts[picked]) / top
            features[known, F["trending"]] = trend[picked] / max(float(trend.max()), 1e-12)
            age_h = np.maximum(now - popularity.first_ms[picked], 0) / 3_600_000
            features[known, F["item_age"]] = np.log1p(age_h) / 10.0
            seen = np.zeros(len(ids))
            seen[known] = counts[picked]
            features[:, F["cold"]] = seen < config.cold_max_interactions
        else:
            features[:, F["cold"]] = 1.0
        return _Candidates(ids, features)

    def _cold(self, categories: Counter[str], scan: int = 500) -> list[str]:
        """Items of the user's two most frequent recent categories that few users have
        touched yet, the most touched of them first (a newcomer's first buyers first)."""
        popularity, limit = self.popularity, self.config.cold_max_interactions
        found: list[tuple[float, str]] = []
        for category, _ in categories.most_common(2):
            for item in self.by_category.get(category, [])[:scan]:
                column = popularity.catalogue.column.get(item)
                count = 0.0 if column is None else float(popularity.counts[column])
                if count < limit:
                    found.append((count, item))
        return [item for _, item in sorted(found, key=lambda pair: -pair[0])]

    @staticmethod
    def _without_tower(found: _Candidates) -> _Candidates:
        """The candidates and features the sources other than the tower give."""
        keep: npt.NDArray[np.bool_] = np.asarray(
            (found.features[:, _OTHER_SOURCES] > 0).any(axis=1)
        )
        features = found.features[keep].copy()
        features[:, _TOWER_FEATURES] = 0.0
        return _Candidates([found.ids[n] for n in np.flatnonzero(keep)], features)


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
