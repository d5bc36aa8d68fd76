"""The recommender as served: multi-source candidates ranked by an online ranker that learns
from each event only after it was scored, and learns what matters in its stream."""

from __future__ import annotations

import math
import random

import pytest
import torch

from model.device import choose_device
from model.evaluation import EvaluationConfig, prequential
from model.interaction import Interaction
from model.ranked import RankedRecommender
from model.ranking import CandidateConfig, F
from model.recommender import RecommendRequest, TwoTowerOnlineRecommender
from model.trainer import OnlineTrainer, TrainerConfig, TrainingExample
from model.two_tower import TwoTowerConfig, TwoTowerRecommender

HOUR_MS = 3_600_000
CYCLE = [f"item{n}" for n in range(12)]


def _grocery(seed: int, n: int = 3000) -> list[Interaction]:
    """Each user buys from their own small basket again and again, one item most often."""
    rng = random.Random(seed)
    baskets = {f"u{u}": rng.sample(CYCLE, 3) for u in range(30)}
    users = [rng.choice(sorted(baskets)) for _ in range(n)]
    return [
        Interaction(u, rng.choices(baskets[u], weights=(6, 2, 2))[0], "order", t * HOUR_MS)
        for t, u in enumerate(users)
    ]


def _walks(seed: int, n: int = 3000) -> list[Interaction]:
    """Each user walks the catalogue in a fixed order: after item k comes item k+1."""
    rng = random.Random(seed)
    position = {f"u{u}": rng.randrange(len(CYCLE)) for u in range(30)}
    out = []
    for t in range(n):
        user = rng.choice(sorted(position))
        position[user] = (position[user] + 1) % len(CYCLE)
        out.append(Interaction(user, CYCLE[position[user]], "click", t * HOUR_MS))
    return out


def _hit_rate(events: list[Interaction]) -> float:
    system = RankedRecommender(None, CandidateConfig(popular=2, trending=2))
    config = EvaluationConfig(k=1, warmup=0.5, allow_repeats=True, batch_size=32)
    return float(prequential(events, [system], config).results["recommender"]["hr"])


def test_the_ranker_learns_repeats_in_one_stream_and_sequences_in_another() -> None:
    # top-1 among 12 items: chance is 1/12; each stream's own signal must win
    assert _hit_rate(_grocery(seed=1)) > 0.5  # the favourite is bought 60% of the time
    assert _hit_rate(_walks(seed=2)) > 0.9


def test_no_event_is_recommended_before_it_happened() -> None:
    events = [Interaction(f"u{n % 5}", f"new{n}", "click", n * HOUR_MS) for n in range(200)]
    config = EvaluationConfig(k=50, warmup=0.0, allow_repeats=True, batch_size=7)
    result = prequential(events, [RankedRecommender(None)], config)
    assert result.results["recommender"]["hr"] == 0.0


def test_ablations_share_the_state_and_learn_nothing_themselves() -> None:
    model = TwoTowerRecommender(TwoTowerConfig(dim=8, heads=2, max_history=4), seed=0)
    trainer = OnlineTrainer(model, TrainerConfig(sampled_negatives=8), choose_device("cpu"))
    full = RankedRecommender(TwoTowerOnlineRecommender(trainer))
    tower_only, no_tower = full.views()
    assert (tower_only.name, no_tower.name) == ("tower_only", "no_tower")
    assert {tower_only.kind, no_tower.kind} == {"ablation"}
    events = _walks(seed=3, n=600)
    config = EvaluationConfig(k=5, warmup=0.2, allow_repeats=True)
    result = prequential(events, [full, tower_only, no_tower], config)
    assert trainer.examples_seen == len(events)  # trained once, by the owner
    assert result.results["no_tower"]["hr"] > 0.5
    before = torch.clone(model.item_embedding.weight)
    request = RecommendRequest("u1", (), 10**9)
    tower_only.learn_many([])
    assert torch.equal(model.item_embedding.weight, before)
    assert full.recommend_many([request], 3) != [[]]


def test_a_new_item_with_metadata_reaches_users_of_its_category_only() -> None:
    system = RankedRecommender(None)
    metadata = {f"{c}{n}": {"category": c, "brand": "b"} for c in "AB" for n in range(5)}
    metadata["fresh-A"] = {"category": "A", "brand": "b"}
    system.set_items(metadata)
    batch = [
        TrainingExample((), Interaction(f"u{c}{n}", f"{c}{n % 5}", "click", n * HOUR_MS))
        for c in "AB"
        for n in range(40)
    ]
    system.learn_many(batch)
    history_a = (Interaction("a", "A1", "click", 1), Interaction("a", "A2", "click", 2))
    history_b = (Interaction("b", "B1", "click", 1),)
    a, b = system.recommend_many(
        [RecommendRequest("a", history_a, 10**6), RecommendRequest("b", history_b, 10**6)], 500
    )
    assert "fresh-A" in a  # no interactions at all: proposed by the cold-start source
    assert "fresh-A" not in b


def test_own_item_features_describe_the_latest_touch() -> None:
    system = RankedRecommender(None)
    history = (
        Interaction("u", "milk", "order", 0),
        Interaction("u", "bread", "order", 1),
        Interaction("u", "milk", "order", 2),
    )
    found = system.ranking.candidates(RecommendRequest("u", history, 3), None)
    assert found.ids[:2] == ["milk", "bread"]  # twice, then once
    milk = found.features[found.ids.index("milk")]
    assert milk[F["own_last"]] == 1.0  # milk was the latest touch, though also the first
    assert milk[F["own_count"]] == pytest.approx(math.log1p(2))
