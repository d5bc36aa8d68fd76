"""`ModelPublisher`: Redis holds exactly the model's item vectors after every publish, the
catalogue written into two tables the publisher keeps (never the one the last vectors are in)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from model.checkpoints import CheckpointError
from model.interaction import EventEffect, Interaction
from stream.config import Settings
from stream.events.handlers import SourcePosition
from stream.training.learner import StreamLearner
from stream.training.loop import fresh_learner
from stream.training.publisher import ModelPublisher
from stream.wiring import checkpoint_store, redis_client, vector_state

pytestmark = pytest.mark.integration


def _learn(learner: StreamLearner, start: int, count: int) -> None:
    rng = np.random.default_rng(start)
    items = rng.permutation(40) if count == 40 else rng.integers(40, size=count)
    learner.learn(
        [
            (
                SourcePosition("clicks", 0, start + n),
                EventEffect(
                    f"e{start + n}",
                    f"u{n % 7}",
                    (Interaction(f"u{n % 7}", f"i{items[n]}", "click", 1_000 * n),),
                ),
            )
            for n in range(count)
        ]
    )


def test_redis_holds_the_models_vectors_after_every_publish_a_failed_one_between(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish that fails after making the catalogue must not leave the next one writing
    into the table the last published vectors are in: the next comparison reads them, and
    would miss every vector that changed."""
    learner = fresh_learner(settings, seed=0)
    model = learner.trainer.model

    async def scenario() -> list[int]:
        client = redis_client(settings)
        state = vector_state(settings, client)
        publisher = ModelPublisher(state, checkpoint_store(settings))
        save = publisher.checkpoints.save
        tables: list[int] = []
        try:
            _learn(learner, 0, 40)  # every item admitted: the catalogue keeps its size
            for turn in range(5):
                _learn(learner, 100 * turn + 100, 30)
                if turn == 2:  # the catalogue is made and compared, then the save fails
                    with monkeypatch.context() as patched:
                        patched.setattr(
                            publisher.checkpoints, "save", _failing(CheckpointError("disk full"))
                        )
                        with pytest.raises(CheckpointError):
                            await publisher.publish(learner, turn, 0.0)
                    _learn(learner, 100 * turn + 150, 30)
                await publisher.publish(learner, turn, 0.0)
                ids, vectors = model.catalogue()
                assert learner.events_learned == 40 + 30 * (turn + 1) + (30 if turn >= 2 else 0)
                found, published = await state.item_vectors(ids)
                assert found == ids
                np.testing.assert_array_equal(published, vectors.numpy())
                tables += [t.data_ptr() for t in publisher._tables if t is not None]
        finally:
            await client.aclose()
        assert publisher.checkpoints.save == save
        return tables

    tables = asyncio.run(scenario())
    assert len(set(tables)) == 2  # two tables, kept from publish to publish


def _failing(error: Exception) -> Callable[..., int]:
    """A stand-in for `CheckpointStore.save` that raises `error`."""

    def fail(*args: object, **kwargs: object) -> int:
        raise error

    return fail
