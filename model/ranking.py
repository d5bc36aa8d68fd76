"""What `recstream eval` and the API share of the recommender: every candidate source but the
tower's search (co-visitation neighbours, the user's own items, popularity, cold-start items),
one feature row per candidate, and the online ranker over them.

The tower takes part through a `TowerView` (its nearest items and its score of any item), which
evaluation builds from a score matrix and a replica from its FAISS index. `state_dict()` is
published with each model version, so every replica ranks as the evaluator does.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from model.interaction import own_items
from model.packed import pack_strings, unpack_strings
from model.ranker import OnlineRanker
from model.recommender import RecommendRequest
from model.sources import CoVisitation, ItemPopularity
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
HISTORY_LEN = 200  # a user's newest interactions a request and a learned example carry
DAY_MS = 86_400_000
_TOWER, _COVISIT, _OWN, _POPULAR, _COLD = 1, 2, 4, 8, 16  # the sources that proposed an item
_FROM = (
    ("from_tower", _TOWER),
    ("from_covisit", _COVISIT),
    ("from_own", _OWN),
    ("from_popular", _POPULAR),
    ("from_cold", _COLD),
)
# an item's `reason`: the first of these sources that proposed it
REASONS: tuple[tuple[int, str], ...] = (
    (_TOWER, "personalized"),
    (_OWN, "repeat"),
    (_COVISIT, "covisit"),
    (_COLD, "cold_start"),
    (_POPULAR, "popular"),
)
_TOWER_FEATURES = [F["tower"], F["tower_known"], F["from_tower"]]
_OTHER_SOURCES = [F["from_covisit"], F["from_own"], F["from_popular"], F["from_cold"]]
Vector = npt.NDArray[np.float64]


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
    cold_slots: int = 1  # of each top-k, kept for the best new item of the user's categories
    recent: int = 10
    ranker_hidden: int = 16
    ranker_learning_rate: float = 0.05


class TowerView(Protocol):
    """The two-tower model's side of one request."""

    def nearest(self, n: int) -> Sequence[str]:
        """Up to `n` items nearest to the user, best first."""
        ...

    def score(self, ids: Sequence[str]) -> tuple[Vector, npt.NDArray[np.bool_]]:
        """The tower's score of each of `ids`, and whether it knows the item at all."""
        ...


class ItemAttributes:
    """Items' category and brand, and each category's items (the cold-start source's pool)."""

    def __init__(self) -> None:
        self.category_of: dict[str, str] = {}
        self.brand_of: dict[str, str] = {}
        self._by_category: dict[str, dict[str, None]] = {}  # insertion order: oldest first

    def items_of(self, category: str) -> Collection[str]:
        """Every item of `category` (a live view: do not hold it across writes)."""
        return self._by_category.get(category, {}).keys()

    def set(self, item_id: str, category: str | None, brand: str | None) -> None:
        """Replace what is known of `item_id` (None: nothing); an item that keeps its
        category keeps its place among the category's items."""
        if self.category_of.get(item_id) != category:
            self.remove(item_id)
            if category is not None:
                self.category_of[item_id] = category
                self._by_category.setdefault(category, {})[item_id] = None
        self.brand_of.pop(item_id, None)
        if brand is not None:
            self.brand_of[item_id] = brand

    def remove(self, item_id: str) -> None:
        category = self.category_of.pop(item_id, None)
        if category is not None:
            self._by_category[category].pop(item_id, None)
        self.brand_of.pop(item_id, None)

    def newest_in(self, category: str, n: int) -> list[str]:
        """The `n` items of `category` described last, newest first."""
        return list(itertools.islice(reversed(self._by_category.get(category, {})), n))

    def state_dict(self) -> dict[str, Any]:
        ids = list(self.category_of.keys() | self.brand_of.keys())
        ordered = [i for members in self._by_category.values() for i in members]
        ids = ordered + sorted(set(ids) - set(ordered))
        return {
            "ids": pack_strings(ids),
            "category": pack_strings([self.category_of.get(i, "") for i in ids]),
            "brand": pack_strings([self.brand_of.get(i, "") for i in ids]),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.category_of, self.brand_of, self._by_category = {}, {}, {}
        for item, category, brand in zip(
            unpack_strings(state["ids"]),
            unpack_strings(state["category"]),
            unpack_strings(state["brand"]),
            strict=True,
        ):
            self.set(item, category or None, brand or None)


@dataclass(frozen=True, slots=True)
class Candidates:
    """One request's candidates, a feature row each, and the sources that proposed each."""

    ids: list[str]
    features: npt.NDArray[np.float64]
    sources: npt.NDArray[np.int64]

    def without_tower(self) -> Candidates:
        """The candidates and features the sources other than the tower give."""
        keep: npt.NDArray[np.bool_] = np.asarray((self.features[:, _OTHER_SOURCES] > 0).any(axis=1))
        features = self.features[keep].copy()
        features[:, _TOWER_FEATURES] = 0.0
        ids = [self.ids[n] for n in np.flatnonzero(keep)]
        return Candidates(ids, features, self.sources[keep] & ~_TOWER)


@dataclass(frozen=True, slots=True)
class RankedItem:
    item_id: str
    score: float
    reason: str


class Ranking:
    """The candidate sources learned from the stream and the online ranker over them.

    `ranker` ranks with the tower's candidates and score; `no_tower_ranker` without them (for a
    request the tower cannot serve, and the `no_tower` ablation).
    """

    def __init__(self, config: CandidateConfig | None = None, *, seed: int = 0) -> None:
        self.config = config or CandidateConfig()
        self.covisit = CoVisitation()
        self.popularity = ItemPopularity()
        self.items = ItemAttributes()
        hidden, rate = self.config.ranker_hidden, self.config.ranker_learning_rate
        self.ranker = OnlineRanker(len(FEATURES), hidden, rate, seed=seed)
        self.no_tower_ranker = OnlineRanker(len(FEATURES), hidden, rate, seed=seed)

    def rank(
        self,
        request: RecommendRequest,
        tower: TowerView | None,
        k: int,
        items: ItemAttributes | None = None,
        allowed: Callable[[str], bool] | None = None,
    ) -> list[RankedItem]:
        """The best `k` candidates for `request` (none in its `exclude`, each `allowed`).

        New items get exposure: when the ranker's top-k holds none of the cold-start source's
        items, its best one takes the last of `cold_slots` places (a newcomer is otherwise
        never shown, so never learned).
        """
        found = self.candidates(request, tower, items)
        ranker = self.ranker if tower is not None else self.no_tower_ranker
        scores = ranker.scores(found.features) if found.ids else np.zeros(0)
        order = [
            int(c)
            for c in np.argsort(-scores, kind="stable")
            if allowed is None or allowed(found.ids[c])
        ]
        best, rest = order[:k], order[k:]
        cold = [c for c in rest if found.sources[c] & _COLD]
        slots = min(self.config.cold_slots, len(cold), len(best))
        if slots and not any(found.sources[c] & _COLD for c in best):
            best = best[: len(best) - slots] + cold[:slots]
        return [RankedItem(found.ids[c], float(scores[c]), _reason(found.sources[c])) for c in best]

    def learn(self, request: RecommendRequest, tower: TowerView | None, item_id: str) -> None:
        """The rankers' step on the event `request` led to (`item_id`); call before `observe`
        learns the event, so the ranker never sees the event it scores."""
        found = self.candidates(request, tower)
        if tower is not None and item_id in found.ids:
            self.ranker.learn(found.features, found.ids.index(item_id))
        plain = found.without_tower() if tower is not None else found
        if item_id in plain.ids:
            self.no_tower_ranker.learn(plain.features, plain.ids.index(item_id))

    def observe(self, batch: Sequence[TrainingExample]) -> None:
        """Add the events to the co-visitation and popularity sources."""
        for example in batch:
            self.covisit.learn(example.history, example.target)
            self.popularity.add(example.target.item_id, example.target.ts_ms)

    def candidates(
        self,
        request: RecommendRequest,
        tower: TowerView | None,
        items: ItemAttributes | None = None,
    ) -> Candidates:
        """Every source's proposals for one request (none in its `exclude`), a feature row
        each; `items` (default: this ranking's) gives categories and brands."""
        config, items = self.config, items or self.items
        history, exclude = request.history, request.exclude
        recent = [i.item_id for i in history[-config.recent :]]
        covisit = self.covisit.scored(recent)
        own = own_items(i.item_id for i in reversed(history))
        sources: dict[str, int] = {}  # item -> bit set of the sources that proposed it

        def propose(proposed: Sequence[str], source: int, limit: int) -> None:
            taken = 0
            for item in proposed:
                if taken >= limit:
                    break
                if item not in exclude:
                    sources[item] = sources.get(item, 0) | source
                    taken += 1

        if tower is not None:
            propose(tower.nearest(config.tower + len(exclude)), _TOWER, config.tower)
        covisit_best = covisit.top(config.covisit + len(exclude))
        propose(covisit_best, _COVISIT, config.covisit)
        propose([item for item, _ in own], _OWN, config.own)
        popularity = self.popularity
        propose(popularity.top(config.popular + len(exclude)), _POPULAR, config.popular)
        trending = popularity.top(config.trending + len(exclude), trending=True)
        propose(trending, _POPULAR, config.trending)
        categories = Counter(items.category_of[i] for i in recent if i in items.category_of)
        brands = Counter(items.brand_of[i] for i in recent if i in items.brand_of)
        if categories:
            propose(self._cold(categories, items), _COLD, config.cold)
        ids = list(sources)
        bits = np.fromiter(sources.values(), dtype=np.int64, count=len(ids))
        features = np.zeros((len(ids), len(FEATURES)))
        if not ids:
            return Candidates(ids, features, bits)
        for name, bit in _FROM:
            features[:, F[name]] = (bits & bit) > 0
        if categories or brands:
            for n, item in enumerate(ids):
                category, brand = items.category_of.get(item), items.brand_of.get(item)
                if category is not None:
                    features[n, F["category_affinity"]] = categories[category] / len(recent)
                if brand is not None:
                    features[n, F["brand_affinity"]] = brands[brand] / len(recent)
        if tower is not None:
            scores, known = tower.score(ids)
            features[known, F["tower"]] = scores[known]
            features[known, F["tower_known"]] = 1.0
        covisit_of = covisit.of(ids)
        features[:, F["covisit"]] = np.log1p(100.0 * covisit_of)
        position = {item: n for n, item in enumerate(ids)}
        for rank, item in enumerate(covisit_best):
            if item in position:
                features[position[item], F["covisit_rank"]] = 1.0 / (1.0 + rank)
        self._own_features(request, own, position, features)
        self._popularity_features(request.now_ms, ids, features)
        return Candidates(ids, features, bits)

    @staticmethod
    def _own_features(
        request: RecommendRequest,
        own: list[tuple[str, int]],
        position: Mapping[str, int],
        features: npt.NDArray[np.float64],
    ) -> None:
        """How often and how recently the user touched each of their own items."""
        order: dict[str, int] = {}  # each own item's newest position, 0 = the latest touch
        for n, touched in enumerate(reversed(request.history)):
            order.setdefault(touched.item_id, n)
        last = {i.item_id: i.ts_ms for i in request.history}
        for item, count in own:
            if item not in position:
                continue
            f = features[position[item]]
            age = max(request.now_ms - last[item], 0)
            f[F["own_count"]] = math.log1p(count)
            f[F["own_recent_day"]] = math.exp(-age / DAY_MS)
            f[F["own_recent_month"]] = math.exp(-age / (30 * DAY_MS))
            f[F["own_last"]] = 1.0 / (1.0 + order[item])

    def _popularity_features(
        self, now_ms: int, ids: Sequence[str], features: npt.NDArray[np.float64]
    ) -> None:
        """All-time and trending popularity, age since first seen, and coldness."""
        popularity = self.popularity
        if not len(popularity):
            features[:, F["cold"]] = 1.0
            return
        columns = np.array([popularity.catalogue.column.get(i, -1) for i in ids])
        known = columns >= 0
        counts, trend = popularity.scores(), popularity.scores(trending=True)
        picked = columns[known]
        top = math.log1p(max(popularity.peak(), 1.0))
        features[known, F["popularity"]] = np.log1p(counts[picked]) / top
        features[known, F["trending"]] = trend[picked] / max(popularity.peak(trending=True), 1e-12)
        age_h = np.maximum(now_ms - popularity.first_ms[picked], 0) / 3_600_000
        features[known, F["item_age"]] = np.log1p(age_h) / 10.0
        seen = np.zeros(len(ids))
        seen[known] = counts[picked]
        features[:, F["cold"]] = seen < self.config.cold_max_interactions

    def _cold(self, categories: Counter[str], items: ItemAttributes, scan: int = 500) -> list[str]:
        """The newest items of the user's two most frequent recent categories that few users
        have touched yet, the most touched of them first (a newcomer's first buyers first)."""
        popularity, limit = self.popularity, self.config.cold_max_interactions
        found: list[tuple[float, str]] = []
        for category, _ in categories.most_common(2):
            for item in items.newest_in(category, scan):
                count = popularity.count(item)
                if count < limit:
                    found.append((count, item))
        return [item for _, item in sorted(found, key=lambda pair: -pair[0])]

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint-safe (plain containers and tensors): every source and both rankers."""
        return {
            "config": asdict(self.config),
            "covisit": self.covisit.state_dict(),
            "popularity": self.popularity.state_dict(),
            "items": self.items.state_dict(),
            "ranker": self.ranker.state_dict(),
            "no_tower_ranker": self.no_tower_ranker.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Ranking:
        ranking = cls(CandidateConfig(**state["config"]))
        ranking.covisit.load_state_dict(state["covisit"])
        ranking.popularity.load_state_dict(state["popularity"])
        ranking.items.load_state_dict(state["items"])
        ranking.ranker.load_state_dict(state["ranker"])
        ranking.no_tower_ranker.load_state_dict(state["no_tower_ranker"])
        return ranking


def _reason(bits: int) -> str:
    return next(reason for bit, reason in REASONS if bits & bit)
