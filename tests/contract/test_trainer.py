"""One trainer suite on every device torch sees (the CPU, and CUDA when present): learns a
planted pattern, grows and recycles rows, is deterministic under a seed on the CPU."""

from __future__ import annotations

import gc
import random

import pytest
import torch

from model.device import choose_device
from model.interaction import Interaction
from model.trainer import OnlineTrainer, TrainerConfig, TrainingExample, _PackedExample
from model.two_tower import TwoTowerConfig, TwoTowerRecommender
from model.vocabulary import IdVocabulary

CYCLE = [f"item-{n:02d}" for n in range(20)]


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return choose_device(request.param)


def _trainer(
    device: torch.device, seed: int = 0, vocabulary: IdVocabulary | None = None
) -> OnlineTrainer:
    config = TwoTowerConfig(dim=16, max_history=5, layers=1)
    model = TwoTowerRecommender(config, vocabulary, seed=seed)
    trainer_config = TrainerConfig(sampled_negatives=16, replay_capacity=500, seed=seed)
    return OnlineTrainer(model, trainer_config, device)


def _cycle_examples(n: int, seed: int) -> list[TrainingExample]:
    """Every user walks the catalogue in the same order: after item k comes item k+1."""
    rng = random.Random(seed)
    examples = []
    for number in range(n):
        start = rng.randrange(len(CYCLE))
        walk = [CYCLE[(start + step) % len(CYCLE)] for step in range(6)]
        ts = number * 10
        history = tuple(
            Interaction(f"u{number}", i, "click", ts + s) for s, i in enumerate(walk[:5])
        )
        examples.append(
            TrainingExample(history, Interaction(f"u{number}", walk[5], "click", ts + 5))
        )
    return examples


def _next_item_hit_rate(trainer: OnlineTrainer, examples: list[TrainingExample]) -> float:
    """Top-1 accuracy among items the user has not touched yet (as served by default)."""
    model = trainer.model
    ids, items = model.catalogue()
    users = model.embed_users([e.history for e in examples], [e.target.ts_ms for e in examples])
    scores = users @ items.T
    for row, example in enumerate(examples):
        seen = {i.item_id for i in example.history}
        scores[row, [c for c, item in enumerate(ids) if item in seen]] = -torch.inf
    best: list[int] = scores.argmax(dim=1).tolist()
    hits = sum(ids[b] == e.target.item_id for b, e in zip(best, examples, strict=True))
    return hits / len(examples)


def test_trainer_learns_a_planted_sequence_pattern(device: torch.device) -> None:
    trainer = _trainer(device)
    warmup = _cycle_examples(40, seed=1)
    first = trainer.learn_many(warmup)
    before = _next_item_hit_rate(trainer, _cycle_examples(200, seed=2))
    losses = [trainer.learn_many(_cycle_examples(64, seed=10 + s)).loss for s in range(40)]
    after = _next_item_hit_rate(trainer, _cycle_examples(200, seed=2))
    assert first.admitted == len({e.target.item_id for e in warmup})
    assert sum(losses[-5:]) / 5 < 0.5 * first.loss
    assert after > 0.9 > before + 0.3


def test_new_items_grow_the_table_and_optimiser_state_together(device: torch.device) -> None:
    trainer = _trainer(device, vocabulary=IdVocabulary(chunk=8))
    trainer.learn_many(_cycle_examples(32, seed=1))
    rows_before = trainer.model.item_embedding.weight.shape[0]
    fresh = [
        TrainingExample((), Interaction("u", f"new-{n}", "click", 1_000 + n)) for n in range(30)
    ]
    trainer.learn_many(fresh)
    weight = trainer.model.item_embedding.weight
    assert weight.shape[0] >= rows_before + 24
    state = trainer._sparse.state[weight]
    assert state["exp_avg"].shape == weight.shape


def test_recycled_rows_restart_with_fresh_weights_and_optimiser_state(
    device: torch.device,
) -> None:
    vocabulary = IdVocabulary(expire_after_ms=100)
    trainer = _trainer(device, vocabulary=vocabulary)
    trainer.learn_many(
        [
            TrainingExample((), Interaction("u", item, "click", ts))
            for ts in range(0, 64, 2)
            for item in ("old", "other", "third")
        ]
    )
    weight = trainer.model.item_embedding.weight
    trained = weight.detach().clone()
    assert trainer._sparse.state[weight]["exp_avg_sq"][1:4].abs().sum() > 0
    assert trainer._counts[1:4].sum() > 0
    trainer._admit([TrainingExample((), Interaction("u", "new", "click", 10_000))])
    row = int(vocabulary.lookup(["new"])[0])
    assert row in {1, 2, 3}
    assert vocabulary.lookup(["old", "other", "third"]).tolist() == [0, 0, 0]
    state = trainer._sparse.state[weight]
    assert state["exp_avg"][row].abs().sum() == state["exp_avg_sq"][row].abs().sum() == 0
    assert trainer._counts[row] == 0
    assert not torch.equal(weight[row], trained[row])


def test_training_is_deterministic_under_a_seed(device: torch.device) -> None:
    if device.type != "cpu":
        pytest.skip("CUDA's sparse kernels accumulate in a nondeterministic order")
    runs = []
    for _ in range(2):
        trainer = _trainer(device, seed=7)
        for s in range(3):
            trainer.learn_many(_cycle_examples(48, seed=s))
        runs.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_the_replay_buffer_gives_back_examples_exactly_as_they_were_learned() -> None:
    """Device-free: the packed form of an example."""
    history = (
        Interaction("u", "a", "click", 1_000),
        Interaction("u", "b", "order", 2_000, quantity=3),
    )
    examples = [
        TrainingExample(history, Interaction("u", "c", "click", 3_000)),
        TrainingExample((), Interaction("u", "a", "order", 4_000, quantity=2)),
    ]
    assert [_PackedExample.pack(e).unpack() for e in examples] == examples


def test_a_replayed_example_is_one_object_for_the_garbage_collector() -> None:
    """The buffer holds up to 50,000 examples for the trainer's lifetime; every full
    collection traversed each one's time array and target too (three objects each)."""
    history = tuple(Interaction("u", f"i{n}", "click", 1_000 + n) for n in range(5))
    packed = _PackedExample.pack(TrainingExample(history, Interaction("u", "t", "order", 9_000)))
    gc.collect()  # untracks the tuples that hold only strings and numbers
    fields = [o for o in gc.get_referents(packed) if o is not _PackedExample]
    assert [type(o).__name__ for o in fields if gc.is_tracked(o)] == []


def _long_examples(n: int, length: int, seed: int) -> list[TrainingExample]:
    """Users with `length` clicks of the cycle before each target."""
    rng = random.Random(seed)
    examples = []
    for number in range(n):
        start = rng.randrange(len(CYCLE))
        walk = [CYCLE[(start + step) % len(CYCLE)] for step in range(length + 1)]
        user, ts = f"u{number % 7}", number * 100
        history = tuple(Interaction(user, i, "click", ts + s) for s, i in enumerate(walk[:-1]))
        examples.append(TrainingExample(history, Interaction(user, walk[-1], "click", ts + 99)))
    return examples


def test_the_replay_buffer_keeps_only_the_history_the_model_reads(device: torch.device) -> None:
    """A replayed example holds the newest `max_history` entries (a user's history can be
    ten times that), and training learns exactly what it learns from the whole history."""
    if device.type != "cpu":
        pytest.skip("CUDA's sparse kernels accumulate in a nondeterministic order")
    cut, whole = _trainer(device, seed=3), _trainer(device, seed=3)
    length = whole.model.config.max_history
    for s in range(4):
        examples = _long_examples(32, length=4 * length, seed=s)
        whole.learn_many(examples)
        cut.learn_many([TrainingExample(e.history[-length:], e.target) for e in examples])
    kept = whole._replay.sample(len(whole._replay))
    assert kept
    assert all(len(packed.items) == length for packed in kept)
    learned, reference = whole.model.state_dict(), cut.model.state_dict()
    assert all(torch.equal(learned[k], reference[k]) for k in reference)


def test_the_process_wide_generator_is_neither_read_nor_advanced(device: torch.device) -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    trainer = _trainer(device, seed=5)
    trainer.learn_many(_cycle_examples(48, seed=1))
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(999)  # another process-wide state: the same model and training
    other = _trainer(device, seed=5)
    other.learn_many(_cycle_examples(48, seed=1))
    if device.type == "cpu":
        weights = trainer.model.state_dict()
        assert all(torch.equal(v, other.model.state_dict()[k]) for k, v in weights.items())
