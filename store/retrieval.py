"""Top-k retrieval with business filters and a fallback chain: personal -> recent -> popular."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from store.faiss_index import FaissVectorIndex
from store.interaction_store import RedisInteractionStore
from store.vector_index import VectorIndexError
from store.vector_state import ItemMeta, RedisVectorState


class UnknownItemError(KeyError):
    """An item id with no vector in the index."""


@dataclass(frozen=True, slots=True)
class Filters:
    """Business rules applied to every candidate; purchased items are always excluded."""

    category: str | None = None
    in_stock: bool | None = None
    exclude: frozenset[str] = frozenset()
    exclude_seen: bool = True


@dataclass(frozen=True, slots=True)
class Scored:
    item_id: str
    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class Recommendations:
    user_id: str
    items: list[Scored]
    source: str
    model_version: int | None


@dataclass
class _Picks:
    """Chosen items so far and the ids nothing may repeat."""

    k: int
    blocked: set[str]
    items: list[Scored] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return len(self.items) >= self.k

    def take(self, item_id: str, score: float, reason: str) -> None:
        if not self.full and item_id not in self.blocked:
            self.items.append(Scored(item_id, score, reason))
            self.blocked.add(item_id)


class Retriever:
    """Answers `recommend(user_id, k, filters)` and `similar_items(item_id, k, filters)`.

    Searches over-fetch and re-search wider when filters leave fewer than k items, so a
    strict filter costs more time but never returns an excluded item or too few.
    """

    def __init__(
        self,
        index: FaissVectorIndex,
        catalog: Mapping[str, ItemMeta],
        state: RedisVectorState,
        interactions: RedisInteractionStore,
        *,
        recent: int = 10,
        overfetch: int = 4,
    ) -> None:
        self.index = index
        self.catalog = catalog
        self.state = state
        self.interactions = interactions
        self.recent = recent
        self.overfetch = overfetch

    def _allows(self, filters: Filters) -> Callable[[str], bool]:
        catalog = self.catalog

        def allowed(item_id: str) -> bool:
            meta = catalog.get(item_id)
            if filters.category is not None and (meta is None or meta.category != filters.category):
                return False
            return not (filters.in_stock and meta is not None and not meta.in_stock)

        return allowed

    async def recommend(self, user_id: str, k: int, filters: Filters) -> Recommendations:
        """Personalised when a user vector exists, then similar to recent items, then popular."""
        history, purchased = await self.interactions.user_context(user_id, limit=200)
        user = await self.state.user_vector(user_id)
        blocked = set(filters.exclude) | purchased
        if filters.exclude_seen:
            blocked |= {h.item_id for h in history}
        picks = _Picks(k, blocked)
        allowed = self._allows(filters)
        if user is not None:
            await self._search(user.vector, picks, allowed, "personalized")
        recent = list(dict.fromkeys(h.item_id for h in history))[: self.recent]
        known = [i for i in recent if self.index.contains(i)]
        if not picks.full and known:
            session = self.index.vectors(known).mean(axis=0)
            norm = float(np.linalg.norm(session))
            if norm > 0:
                await self._search(session / norm, picks, allowed, "similar_to_recent")
        if not picks.full:
            await self._popular(picks, allowed)
        source = picks.items[0].reason if picks.items else "none"
        version = user.model_version if user is not None else await self.state.model_version()
        return Recommendations(user_id, picks.items, source, version)

    async def similar_items(self, item_id: str, k: int, filters: Filters) -> list[Scored]:
        """Nearest items to `item_id` by inner product; raises `UnknownItemError`."""
        try:
            vector = self.index.vectors([item_id])[0]
        except VectorIndexError:
            raise UnknownItemError(item_id) from None
        picks = _Picks(k, set(filters.exclude) | {item_id})
        await self._search(vector, picks, self._allows(filters), "similar_item")
        return picks.items

    async def _search(
        self,
        vector: npt.NDArray[np.float32],
        picks: _Picks,
        allowed: Callable[[str], bool],
        reason: str,
    ) -> None:
        size = self.index.size
        fetch = min(size, picks.k * self.overfetch + len(picks.blocked))
        while fetch > 0:
            if self.index.searches_quickly:
                hits = self.index.search(vector, fetch)[0]
            else:
                hits = (await asyncio.to_thread(self.index.search, vector, fetch))[0]
            for item_id, score in zip(hits.ids, hits.scores, strict=True):
                if allowed(item_id):
                    picks.take(item_id, score, reason)
            if picks.full or fetch >= size:
                return
            fetch = min(size, fetch * 4)

    async def _popular(self, picks: _Picks, allowed: Callable[[str], bool]) -> None:
        wanted = picks.k * self.overfetch + len(picks.blocked)
        indexed = self.index.size > 0
        for counter in ("trending", "orders", "clicks"):
            for item_id, count in await self.interactions.top_items(counter, wanted):
                if (not indexed or self.index.contains(item_id)) and allowed(item_id):
                    picks.take(item_id, count, "popular")
            if picks.full:
                return
