"""The trainer's item metadata follows `PUT /v1/items` and deletes through Redis and its feed."""

from __future__ import annotations

import asyncio

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
