"""The trainer's item metadata follows `PUT /v1/items` and deletes through Redis and its feed."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from model.interaction import EventEffect, Interaction
from store.vector_state import ItemMeta
from stream.config import Settings
from stream.events.handlers import SourcePosition
from stream.training.item_metadata import ItemMetadataFollower
from stream.training.loop import fresh_learner
from stream.training.publisher import ModelPublisher
from stream.wiring import checkpoint_store, redis_client, vector_state

pytestmark = pytest.mark.integration


def test_the_trainer_learns_item_metadata_changes_from_the_feed(settings: Settings) -> None:
    learner = fresh_learner(settings, seed=0)
    items = learner.ranking.items

    async def scenario() -> None:
        client = redis_client(settings)
        state = vector_state(settings, client)
        try:
            await state.put_item_meta("tent", ItemMeta("camping", brand="acme"))
            follower = ItemMetadataFollower(state, learner)
            assert await follower.refresh() == 1  # first call: everything Redis holds
            assert items.category_of == {"tent": "camping"}
            assert "tent" in learner.trainer.model.item_features_state()  # the tower hashes it
            await state.put_item_meta("boot", ItemMeta("hiking"))
            await state.put_item_meta("tent", ItemMeta("outdoor", brand="acme"))
            assert await follower.refresh() == 2  # then only what changed
            assert items.category_of == {"tent": "outdoor", "boot": "hiking"}
            assert items.newest_in("outdoor", 5) == ["tent"]
            await state.delete_items(["boot"])
            await follower.refresh()
            assert items.category_of == {"tent": "outdoor"}
            assert await state.tombstones() == {"boot"}  # never published again
            assert await follower.refresh() == 0
            await state.put_item_meta("boot", ItemMeta("hiking"))  # brought back
            await follower.refresh()
            assert await state.tombstones() == set()
            assert items.category_of == {"tent": "outdoor", "boot": "hiking"}
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_a_publish_prepared_before_a_delete_does_not_bring_the_item_back(
    settings: Settings,
) -> None:
    """The trainer reads the tombstones, then trains and checkpoints for a while before it
    writes: an item deleted meanwhile must stay deleted, so the write itself leaves it out."""

    async def scenario() -> tuple[set[str], set[str]]:
        client = redis_client(settings)
        state = vector_state(settings, client)
        try:
            await state.put_item_vectors(["tent", "boot"], np.ones((2, state.dim)), 1)
            await state.delete_items(["boot"])  # after the publisher read no tombstones
            await state.put_item_vectors(["tent", "boot"], np.ones((2, state.dim)), 2)
            published = await state.published(["tent", "boot"])
            return set(published.ids), await state.tombstones()
        finally:
            await client.aclose()

    published, tombstones = asyncio.run(scenario())
    assert published == {"tent"}
    assert tombstones == {"boot"}


def test_item_ids_need_the_admission_threshold_and_expired_items_leave_the_catalogue(
    settings: Settings,
) -> None:
    """Producer-chosen item ids are unbounded: one sighting below RECSTREAM_ITEM_ADMIT_AFTER
    publishes nothing, and an item unseen for RECSTREAM_ITEM_EXPIRE_S of event time is freed
    and its vector unpublished (it comes back as new if seen again)."""
    settings = settings.model_copy(update={"item_admit_after": 2, "item_expire_s": 3_600.0})
    learner = fresh_learner(settings, seed=0)
    hour = 3_600_000

    def clicks(start: int, ts_ms: int, *items: str) -> list[tuple[SourcePosition, EventEffect]]:
        return [
            (
                SourcePosition("clicks", 0, start + n),
                EventEffect(f"e{start + n}", f"u{n}", (Interaction(f"u{n}", i, "click", ts_ms),)),
            )
            for n, i in enumerate(items)
        ]

    async def scenario() -> tuple[set[str], set[str]]:
        client = redis_client(settings)
        state = vector_state(settings, client)
        publisher = ModelPublisher(state, checkpoint_store(settings))
        try:
            learner.learn(clicks(0, 100 * hour, "tent", "tent", "boot", "once"))
            learner.learn(clicks(10, 100 * hour + 1, "boot"))
            await publisher.publish(learner, 1, 0.0)
            first = set((await state.published(["tent", "boot", "once"])).ids)
            learner.learn(clicks(20, 102 * hour, "tent", "tent"))  # boot unseen for 2 hours
            learner.learn(clicks(30, 102 * hour + 1, "tent"))
            await publisher.publish(learner, 2, 0.0)
            later = set((await state.published(["tent", "boot", "once"])).ids)
            return first, later
        finally:
            await client.aclose()

    first, later = asyncio.run(scenario())
    assert first == {"tent", "boot"}  # "once" was seen once: below the threshold
    assert later == {"tent"}  # boot expired and was unpublished
