"""The trainer's stream bookkeeping: each event learned once, resumable."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from model.interaction import EventEffect, Interaction
from model.trainer import OnlineTrainer, TrainerConfig, TrainingExample
from model.two_tower import TwoTowerConfig, TwoTowerRecommender
from stream.events.handlers import DeadLetter, Outcome, SourcePosition
from stream.training.learner import StreamLearner


def _learner(max_users: int = 100) -> StreamLearner:
    model = TwoTowerRecommender(TwoTowerConfig(dim=8, heads=2, max_history=4), seed=0)
    trainer = OnlineTrainer(model, TrainerConfig(sampled_negatives=8), torch.device("cpu"))
    return StreamLearner(trainer, dedup_window=100, max_users=max_users)


def _plain(value: object) -> object:
    """A state with its tensors as lists, so two states compare with ==."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _click(
    partition: int, offset: int, user: str, item: str, ts: int
) -> tuple[SourcePosition, Outcome]:
    source = SourcePosition("clicks", partition, offset)
    effect = EventEffect(f"e-{partition}-{offset}", user, (Interaction(user, item, "click", ts),))
    return source, effect


def test_each_event_is_learned_once_and_the_position_moves_past_the_batch() -> None:
    learner = _learner()
    batch = [_click(0, n, "u", f"i{n}", n) for n in range(5)]
    first = learner.learn(batch)
    again = learner.learn(batch[2:])  # redelivered after a seek
    assert (first.events, again.events) == (5, 0)
    assert learner.events_learned == 5
    assert learner.position == {"clicks/0": 5}


def test_duplicate_event_ids_and_dead_letters_are_counted_not_learned() -> None:
    learner = _learner()
    source, effect = _click(0, 0, "u", "i", 1)
    letter = DeadLetter("bad", SourcePosition("clicks", 0, 2), None, b"x")
    learned = learner.learn(
        [(source, effect), (SourcePosition("clicks", 0, 1), effect), (letter.source, letter)]
    )
    assert (learned.events, learned.duplicates, learned.invalid) == (1, 1, 1)
    assert learner.position == {"clicks/0": 3}


def test_a_restored_learner_continues_with_the_same_histories_ids_and_position() -> None:
    original = _learner()
    original.learn([_click(0, n, f"u{n % 2}", f"i{n}", n) for n in range(6)])
    copy = StreamLearner(
        OnlineTrainer.from_state_dict(original.trainer.state_dict(), torch.device("cpu")), 100
    )
    copy.restore(original.state(), original.position)
    follow_up = [_click(0, 6, "u0", "i9", 6), _click(0, 0, "u0", "i0", 0)]
    resumed, kept = copy.learn(follow_up), original.learn(follow_up)
    assert (resumed.events, resumed.duplicates) == (kept.events, kept.duplicates) == (1, 0)
    assert _plain(copy.state()) == _plain(original.state())
    assert copy.position == original.position


def test_the_least_recently_active_users_history_is_dropped_past_max_users() -> None:
    learner = _learner(max_users=2)
    learner.learn([_click(0, 0, "a", "x", 1), _click(0, 1, "b", "y", 2)])
    learner.learn([_click(0, 2, "a", "z", 3), _click(0, 3, "c", "w", 4)])
    assert learner.users == ["a", "c"]
    restored = StreamLearner(learner.trainer, dedup_window=100, max_users=2)
    restored.restore(learner.state(), learner.position)
    restored.learn([_click(0, 4, "d", "v", 5)])
    assert restored.users == ["c", "d"]


def test_an_event_whose_learning_raises_is_skipped_and_counted_and_the_rest_are_learned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One event must never stop the trainer: it would crash-loop on it after each restart."""
    learner = _learner()
    recommender = learner.recommender
    learn_many = recommender.learn_many
    learned_items: list[str] = []

    def tripping(batch: Sequence[TrainingExample]) -> None:
        if any(e.target.item_id == "poison" for e in batch):
            raise ValueError("a bug this event trips")
        learn_many(batch)
        learned_items.extend(e.target.item_id for e in batch)

    monkeypatch.setattr(recommender, "learn_many", tripping)
    batch = [_click(0, n, f"u{n % 2}", f"i{n}", n) for n in range(4)]
    batch.insert(2, _click(0, 9, "u0", "poison", 2))
    learned = learner.learn(batch)
    assert (learned.events, learned.skipped) == (4, 1)
    assert sorted(learned_items) == ["i0", "i1", "i2", "i3"]
    assert learner.position == {"clicks/0": 10}
    after = learner.learn([_click(0, 10, "u1", "i10", 10)])
    assert (after.events, after.skipped) == (1, 0)
    assert (learner.events_learned, learner.skipped) == (5, 1)
