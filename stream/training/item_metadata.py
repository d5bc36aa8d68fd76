"""The trainer's copy of item metadata (`PUT /v1/items`): category and brand for the ranker's
cold-start source and affinity features, hashed features for the item tower."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from store.vector_state import ItemMeta, RedisVectorState
from stream.training.learner import StreamLearner

log = logging.getLogger(__name__)


def _features(meta: ItemMeta) -> dict[str, str]:
    fields = {"category": meta.category, "brand": meta.brand}
    return {name: value for name, value in fields.items() if value is not None}


class ItemMetadataFollower:
    """Brings `learner` up to date with the item metadata in Redis: everything on the first
    call (or when the change feed was trimmed past the last entry read), then the feed's
    metadata and delete entries since."""

    def __init__(self, state: RedisVectorState, learner: StreamLearner) -> None:
        self.state = state
        self.learner = learner
        self.position: str | None = None

    async def refresh(self) -> int:
        """Apply what changed; returns how many items were described or removed."""
        if self.position is None or not await self.state.feed_kept_since(self.position):
            self.position = await self.state.feed_position()
            return self._describe(await self.state.item_meta())
        changed = 0
        while entries := await self.state.read_feed(self.position):
            for entry in entries:
                if entry.op == "meta":
                    changed += self._describe(await self.state.item_meta(entry.item_ids))
                elif entry.op == "delete":
                    for item_id in entry.item_ids:
                        self.learner.ranking.items.remove(item_id)
                    changed += len(entry.item_ids)
                self.position = entry.entry_id
        return changed

    def _describe(self, metas: Mapping[str, ItemMeta]) -> int:
        self.learner.recommender.set_items({i: _features(m) for i, m in metas.items()})
        return len(metas)
