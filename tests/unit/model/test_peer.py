"""The retrained peer: from scratch at each block boundary, several epochs, never ahead of the
stream; the evaluation reports every system block by block."""

from __future__ import annotations

import random

import torch

from model.device import choose_device
from model.evaluation import EvaluationConfig, prequential
from model.interaction import Interaction
from model.peer import RetrainedPeer
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
