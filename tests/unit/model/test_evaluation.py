"""Prequential evaluation: test-then-train order, hand-computed metrics, warm-up, repeats."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from model.baselines import PopularityRecommender
from model.evaluation import EvaluationConfig, prequential
from model.interaction import Interaction
from model.recommender import RecommendRequest, SystemKind
from model.trainer import TrainingExample


def _stream(*pairs: str) -> list[Interaction]:
    """'u1:a' pairs in time order, one second apart."""
    return [
        Interaction(p.split(":")[0], p.split(":")[1], "click", 1_000 * n)
        for n, p in enumerate(pairs)
    ]


class Memoriser:
    """Recommends exactly the items it has learned: it can only hit what it already saw."""

    name = "memoriser"
    kind: SystemKind = "baseline"

    def __init__(self) -> None:
        self.learned: list[str] = []

    def recommend_many(self, requests: Sequence[RecommendRequest], k: int) -> list[list[str]]:
        return [self.learned[-k:] for _ in requests]

    def learn_many(self, batch: Sequence[TrainingExample]) -> None:
        self.learned += [e.target.item_id for e in batch]


class LastItem:
    """Recommends the user's most recent item: shows what history a request carries."""

    name = "last_item"
    kind: SystemKind = "baseline"

    def recommend_many(self, requests: Sequence[RecommendRequest], k: int) -> list[list[str]]:
        return [[r.history[-1].item_id] if r.history else [] for r in requests]

    def learn_many(self, batch: Sequence[TrainingExample]) -> None:
        return None


def test_popularity_metrics_match_a_hand_computed_stream() -> None:
    events = _stream("u1:a", "u2:a", "u3:b", "u1:b", "u2:c")
    config = EvaluationConfig(k=1, warmup=0.0, batch_size=1)
    result = prequential(events, [PopularityRecommender()], config)
    scores = result.results["popularity"]
    assert result.events_scored == 5
    assert scores["hr"] == pytest.approx(2 / 5)
    assert scores["ndcg"] == pytest.approx(2 / 5)
    assert scores["mrr"] == pytest.approx(2 / 5)
    assert scores["coverage"] == pytest.approx(2 / 3)


def test_ranks_below_the_top_score_discounted_gain_and_reciprocal_rank() -> None:
    events = _stream("u1:a", "u2:a", "u3:b", "u4:b", "u5:a", "u6:b")
    config = EvaluationConfig(k=2, warmup=0.0, batch_size=1)
    scores = prequential(events, [PopularityRecommender()], config).results["popularity"]
    assert scores["hr"] == pytest.approx(4 / 6)
    assert scores["mrr"] == pytest.approx((1 + 0.5 + 1 + 0.5) / 6)
    assert scores["ndcg"] == pytest.approx((2 + 2 / math.log2(3)) / 6)


def test_every_event_is_scored_before_it_is_learned() -> None:
    events = _stream(*(f"u{n % 3}:item{n}" for n in range(40)))
    for batch_size in (1, 7, 64):
        config = EvaluationConfig(k=50, warmup=0.0, batch_size=batch_size, allow_repeats=True)
        result = prequential(events, [Memoriser()], config)
        assert result.events_scored == 40
        assert result.results["memoriser"]["hr"] == 0.0


def test_a_request_sees_earlier_events_of_its_batch_but_never_its_own() -> None:
    events = _stream("u1:a", "u1:a", "u2:b")
    config = EvaluationConfig(k=1, warmup=0.0, batch_size=8, allow_repeats=True)
    assert prequential(events, [LastItem()], config).results["last_item"]["hr"] == 1 / 3


def test_warmup_events_are_learned_but_not_scored() -> None:
    events = _stream(*(f"u{n}:a" for n in range(10)))
    config = EvaluationConfig(k=1, warmup=0.5, batch_size=3)
    result = prequential(events, [PopularityRecommender()], config)
    assert result.events_scored == 5
    assert result.results["popularity"]["hr"] == 1.0


def test_repeats_are_excluded_by_default_and_scored_when_allowed() -> None:
    events = _stream("u1:a", "u2:b", "u1:a", "u1:b")
    excluded = prequential(events, [PopularityRecommender()], EvaluationConfig(k=1, warmup=0))
    assert excluded.events_scored == 3
    repeats = EvaluationConfig(k=1, warmup=0, allow_repeats=True)
    allowed = prequential(events, [PopularityRecommender()], repeats)
    assert allowed.events_scored == 4


def test_events_are_sorted_by_time_and_stable_on_ties() -> None:
    late, tie_first, tie_second = (
        Interaction("u1", "a", "click", 5_000),
        Interaction("u2", "b", "click", 1_000),
        Interaction("u3", "b", "click", 1_000),
    )
    config = EvaluationConfig(k=1, warmup=0.0, batch_size=1)
    result = prequential([late, tie_first, tie_second], [PopularityRecommender()], config)
    assert result.results["popularity"]["hr"] == pytest.approx(1 / 3)


def test_hits_are_split_by_segment() -> None:
    # u1 has 6 events (the 6th is past its first five), "a" is an hour old at the end
    events = [Interaction("u1", "a", "click", n * 600_000) for n in range(6)]
    events.append(Interaction("u2", "b", "click", 2 * 86_400_000))
    config = EvaluationConfig(k=1, warmup=0.0, batch_size=1, allow_repeats=True)
    result = prequential(events, [LastItem()], config)
    segments = result.results["last_item"]["segments"]
    assert {n: s["scored"] for n, s in segments.items()} == {
        "new_users": 6,  # u1's first five and u2's first
        "cold_items": 7,  # every event is within a day of its item's first one
        "repeat_items": 5,
        "first_time_items": 2,
    }
    assert segments["repeat_items"]["hr"] == 1.0  # the last item is the one repeated
    assert segments["first_time_items"]["hr"] == 0.0
    assert segments["new_users"]["hr"] == pytest.approx(4 / 6)
    assert result.results["last_item"]["kind"] == "baseline"
