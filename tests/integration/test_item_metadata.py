"""The trainer's item metadata follows `PUT /v1/items` and deletes through Redis and its feed."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from store.vector_state import ItemMeta
from stream.config import Settings
from stream.training.item_metadata import ItemMetadataFollower
from stream.training.loop import fresh_learner
from stream.wiring import redis_client, vector_state

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
