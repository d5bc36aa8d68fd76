"""Baselines: each ranks by the signal it is named for."""

from __future__ import annotations

from model.baselines import (
    IncrementalMFRecommender,
    ItemKNNRecommender,
    PersonalFrequencyRecommender,
    PopularityRecommender,
)
from model.interaction import Interaction
from model.recommender import RecommendRequest
from model.trainer import TrainingExample

DAY_MS = 86_400_000


def _learn_sequence(system: ItemKNNRecommender, items: list[str], user: str, ts: int) -> None:
    history: list[Interaction] = []
    for step, item in enumerate(items):
        event = Interaction(user, item, "click", ts + step)
        system.learn_many([TrainingExample(tuple(history), event)])
        history.append(event)


def test_recent_popularity_prefers_what_is_popular_now() -> None:
    system = PopularityRecommender(half_life_ms=DAY_MS)
    old = [TrainingExample((), Interaction("u", "old-hit", "click", 0)) for _ in range(10)]
    new = [TrainingExample((), Interaction("u", "new-hit", "click", 10 * DAY_MS)) for _ in range(2)]
    system.learn_many(old + new)
    request = RecommendRequest("v", (), 10 * DAY_MS)
    assert system.recommend_many([request], 2) == [["new-hit", "old-hit"]]
    assert PopularityRecommender().recommend_many([request], 1) == [[]]


def test_item_knn_recommends_what_co_occurs_with_recent_items() -> None:
    system = ItemKNNRecommender()
    for user in range(5):
        _learn_sequence(system, ["tent", "stove"], f"camper{user}", user * 100)
    for user in range(20):
        _learn_sequence(system, ["novel", "bestseller"], f"reader{user}", 1_000 + user * 100)
    tent = Interaction("new", "tent", "click", 10_000)
    ranked = system.recommend_many(
        [RecommendRequest("new", (tent,), 10_001, frozenset({"tent"}))], 1
    )
    cold = system.recommend_many([RecommendRequest("cold", (), 10_001)], 1)
    assert ranked == [["stove"]]
    assert cold == [["bestseller"]] or cold == [["novel"]]


def test_incremental_mf_learns_each_users_taste() -> None:
    system = IncrementalMFRecommender(seed=1)
    tastes = {"a": ["a1", "a2", "a3", "a4"], "b": ["b1", "b2", "b3", "b4"]}
    for rounds in range(60):
        for group, items in tastes.items():
            for user in range(4):
                item = items[(user + rounds) % 3]
                event = Interaction(f"{group}{user}", item, "click", rounds)
                system.learn_many([TrainingExample((), event)])
    requests = [RecommendRequest("a0", (), 0), RecommendRequest("b0", (), 0)]
    ranked = system.recommend_many(requests, 3)
    assert set(ranked[0]) == {"a1", "a2", "a3"}
    assert set(ranked[1]) == {"b1", "b2", "b3"}


def test_item_knn_scores_the_same_before_and_after_merging_pending_pairs() -> None:
    eager, lazy = ItemKNNRecommender(merge_every=1), ItemKNNRecommender()
    for system in (eager, lazy):
        for user in range(6):
            items = [f"i{(user * 3 + step) % 11}" for step in range(8)]
            _learn_sequence(system, items, f"u{user}", user * 100)
    history = (Interaction("x", "i4", "click", 0), Interaction("x", "i5", "click", 1))
    request = RecommendRequest("x", history, 2, frozenset({"i4", "i5"}))
    assert eager._merged._nnz() > 0
    assert lazy._merged._nnz() == 0
    assert eager.recommend_many([request], 5) == lazy.recommend_many([request], 5)


def test_personal_frequency_ranks_own_items_by_count_then_recency_then_popularity() -> None:
    system = PersonalFrequencyRecommender()
    bought = ["milk", "bread", "milk", "eggs", "bread", "milk", "jam"]
    system.learn_many(
        [TrainingExample((), Interaction("u", i, "order", t)) for t, i in enumerate(bought)]
    )
    system.learn_many(
        [TrainingExample((), Interaction(f"v{n}", "cola", "order", 100 + n)) for n in range(5)]
    )
    request = RecommendRequest("u", (), 200)
    # milk 3, bread 2, then eggs and jam once each (jam later), then the popular cola
    assert system.recommend_many([request], 5) == [["milk", "bread", "jam", "eggs", "cola"]]
    no_repeats = RecommendRequest("u", (), 200, frozenset(bought))
    assert system.recommend_many([no_repeats], 1) == [["cola"]]
    assert system.recommend_many([RecommendRequest("new", (), 200)], 1) == [["cola"]]
