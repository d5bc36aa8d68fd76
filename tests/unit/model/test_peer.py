"""The retrained peer: from scratch at each block boundary, several epochs, never ahead of the
stream; the evaluation reports every system block by block."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
import torch

from model.device import choose_device
from model.evaluation import EvaluationConfig, prequential, training_examples
from model.interaction import Interaction
from model.peer import PeerError, RetrainedPeer
from model.recommender import RecommendRequest
from model.trainer import TrainerConfig
from model.two_tower import TwoTowerConfig

CYCLE = [f"item{n:02d}" for n in range(20)]


def _walks(n: int) -> list[Interaction]:
    """Each user walks six steps of the catalogue in order from a random start: after item k
    comes item k+1."""
    rng = random.Random(0)
    events: list[Interaction] = []
    while len(events) < n:
        user, start = f"u{len(events)}", rng.randrange(len(CYCLE))
        for step in range(6):
            item = CYCLE[(start + step) % len(CYCLE)]
            events.append(Interaction(user, item, "click", len(events) * 1_000))
    return events[:n]


def _peer(boundaries: list[int], epochs: int = 3) -> RetrainedPeer:
    return RetrainedPeer(
        boundaries,
        choose_device("cpu"),
        TwoTowerConfig(dim=16, max_history=5, layers=1),
        TrainerConfig(sampled_negatives=16),
        epochs=epochs,
        batch_size=32,
    )


def test_the_peer_retrains_from_scratch_at_each_boundary_on_what_came_before() -> None:
    events = _walks(1_000)
    peer = _peer([200, 600])
    config = EvaluationConfig(k=3, warmup=0.2, batch_size=50)
    result = prequential(events, [peer], config)
    assert peer.retrained_at == [200, 600]  # batches of 50 land on the boundaries
    assert result.results["retrained_model"]["kind"] == "peer"
    blocks = result.results["retrained_model"]["blocks"]
    assert [b["block"] for b in blocks] == ["block_2", "block_3", "block_4", "block_5"]
    assert sum(b["scored"] for b in blocks) == result.events_scored
    assert blocks[-1]["hr"] > 0.5  # the walk is learned by then (chance: 3 in 20)


def test_before_its_first_retraining_the_peer_recommends_nothing() -> None:
    peer = _peer([1_000])
    config = EvaluationConfig(k=3, warmup=0.0, allow_repeats=True, batch_size=50)
    result = prequential(_walks(200), [peer], config)
    assert result.results["retrained_model"]["hr"] == 0.0
    assert peer.retrained_at == []


def test_retraining_leaves_the_process_wide_generator_alone() -> None:
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    peer = _peer([50], epochs=1)
    prequential(_walks(100), [peer], EvaluationConfig(k=3, warmup=0.0, batch_size=50))
    assert torch.equal(torch.random.get_rng_state(), before)


def test_a_peer_trained_in_a_child_process_serves_the_models_an_inline_one_trains() -> None:
    events = _walks(600)
    config = EvaluationConfig(k=3, warmup=0.2, batch_size=50)
    inline, background = _peer([200, 400], epochs=1), _peer([200, 400], epochs=1)
    background.start(training_examples(sorted(events, key=lambda e: e.ts_ms), config.history_len))
    served: dict[str, list[list[str]]] = {"inline": [], "background": []}

    def recording(peer: RetrainedPeer, name: str) -> RetrainedPeer:
        recommend = peer.recommend_many

        def recorded(requests: Sequence[RecommendRequest], k: int) -> list[list[str]]:
            served[name].extend(out := recommend(requests, k))
            return out

        peer.recommend_many = recorded  # type: ignore[method-assign]
        return peer

    first = prequential(events, [recording(inline, "inline")], config)
    second = prequential(events, [recording(background, "background")], config)
    assert background.retrained_at == inline.retrained_at == [200, 400]
    assert served["background"] == served["inline"]
    assert any(served["inline"])
    assert first.results["retrained_model"]["hr"] == second.results["retrained_model"]["hr"]


def test_a_peer_whose_training_process_dies_says_so() -> None:
    peer = _peer([200], epochs=1)
    peer.start([])  # the child trains nothing and exits: boundary 200 never comes
    with pytest.raises(PeerError, match="training process exited"):
        prequential(_walks(300), [peer], EvaluationConfig(k=3, warmup=0.0, batch_size=50))
