"""Top-k retrieval with business filters. With the ranking state published with the served
model version: every candidate source ranked by the online ranker, exactly as `recstream eval`
ranks (`model.ranking.Ranking`); without one (a version published before rankings were): the
fallback chain personal -> similar to recent -> popular."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import numpy as np
import numpy.typing as npt
from redis.exceptions import RedisError

from model.interaction import own_items
from model.ranking import HISTORY_LEN, Ranking, Vector
from model.recommender import RecommendRequest
from store.errors import StoreError
from store.interaction_store import HistoryEntry, RedisInteractionStore
from store.item_catalog import ItemCatalog
from store.prepared_users import PreparedUsers, PreparedVector
from store.vector_index import VectorIndex, VectorIndexError
from store.vector_state import RedisVectorState, UserVector

log = logging.getLogger(__name__)


class UnknownItemError(StoreError, KeyError):
    """An item id with no vector in the index."""


@dataclass(frozen=True, slots=True)
class Filters:
    """Business rules applied to every candidate. Without `repeats`, the user's purchased
    items (and, with `exclude_seen`, every item they touched) are excluded; with it, the
    user's own items are recommended again, most often and most recently bought first."""

    category: str | None = None
    in_stock: bool | None = None
    exclude: frozenset[str] = frozenset()
    exclude_seen: bool = True
    repeats: bool = False


@dataclass(frozen=True, slots=True)
class Scored:
    item_id: str
    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class Recommendations:
    """Top-k for a user; `model_version` scored every model-ranked item (None: none was),
    `as_of_event_id` is the newest event of the user the ranking reflects."""

    user_id: str
    items: list[Scored]
    source: str
    model_version: int | None
    as_of_event_id: str = ""


class UserEncoder(Protocol):
    """Embeds a user from their history with a given model version, when it has that model."""

    def encode(
        self, model_version: int, user_id: str, history: Sequence[HistoryEntry]
    ) -> npt.NDArray[np.float32] | None: ...


MAX_SCAN = 10_000  # nearest items one search may widen to when filters reject most of them
# A category of at most this many items is searched among its items only, exactly: ~1 ms at
# 2,000 (bench figures in issue 17's note); a larger one is a share of the catalogue that
# the whole-index search, widened up to MAX_SCAN, finds quickly.
EXACT_AMONG = 2_000
_POPULAR_KEPT = 200  # popular items kept per counter, served while Redis is away
_POPULAR_REFRESH_S = 5.0
_POPULAR_COUNTERS = ("trending", "orders", "clicks")  # in order of preference
_ATTEMPTS = 5  # a publish landing mid-request restarts it; after this many, popular only
_MODELLED = ("personalized", "similar_to_recent")  # reasons whose scores come from the model
Rankings = Callable[[int], Ranking | None]  # a model version's ranking state, if it has one


def _now_ms() -> int:
    return int(time.time() * 1000)


class IndexTower:
    """The tower's side of one request (`model.ranking.TowerView`) from a replica's index:
    the items nearest to the user's vector, and the inner product with any indexed item."""

    def __init__(self, index: VectorIndex, user: npt.NDArray[np.float32]) -> None:
        self.index, self.user = index, user

    def nearest(self, n: int) -> list[str]:
        n = min(n, self.index.size)
        return [] if n <= 0 else list(self.index.search(self.user, n)[0].ids)

    def score(self, ids: Sequence[str]) -> tuple[Vector, npt.NDArray[np.bool_]]:
        known = np.fromiter((self.index.contains(i) for i in ids), dtype=bool, count=len(ids))
        scores = np.zeros(len(ids))
        try:
            vectors = self.index.vectors([i for i, k in zip(ids, known, strict=True) if k])
        except VectorIndexError:  # removed since `contains`: the stamp check restarts us
            return scores, np.zeros(len(ids), dtype=bool)
        scores[known] = vectors @ self.user
        return scores, known


def _take_repeats(
    history: Sequence[HistoryEntry], picks: _Picks, allowed: Callable[[str], bool], most: int
) -> None:
    """Up to `most` of the user's own items (history newest first), most often first, then
    most recent: the repeat-purchase source (reason `repeat`, score = times touched)."""
    for item, count in own_items(h.item_id for h in history)[:most]:
        if allowed(item):
            picks.take(item, float(count), "repeat")


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


@dataclass(frozen=True, slots=True)
class _Allowed:
    """Whether a request's filters let an item through."""

    catalog: ItemCatalog
    filters: Filters
    exact_among: int

    def among(self) -> Collection[str] | None:
        """Every item the filters let through, when a category narrows the catalogue to at
        most `exact_among` items (few enough to score exactly), else None. Made only when a
        search needs it: many requests are filled without one."""
        if self.filters.category is None:
            return None
        members = self.catalog.attributes.items_of(self.filters.category)
        if len(members) > self.exact_among:
            return None
        return tuple(members)  # a copy: the search runs in a thread while the feed writes

    def __call__(self, item_id: str) -> bool:
        if item_id in self.catalog.deleted:
            return False
        meta = self.catalog.get(item_id)
        category = self.filters.category
        if category is not None and (meta is None or meta.category != category):
            return False
        return not (self.filters.in_stock and meta is not None and not meta.in_stock)


class Retriever:
    """Answers `recommend(user_id, k, filters)` and `similar_items(item_id, k, filters)`.

    Searches over-fetch and re-search wider when filters leave fewer than k items, so a
    strict filter costs more time but never returns an excluded item or too few.
    """

    def __init__(
        self,
        index: VectorIndex,
        catalog: ItemCatalog,
        state: RedisVectorState,
        interactions: RedisInteractionStore,
        *,
        encoder: UserEncoder | None = None,
        prepared: PreparedUsers | None = None,
        rankings: Rankings | None = None,
        clock: Callable[[], int] = _now_ms,
        recent: int = 10,
        overfetch: int = 4,
        max_scan: int = MAX_SCAN,
        exact_among: int = EXACT_AMONG,
    ) -> None:
        self.index = index
        self.rankings = rankings
        self.clock = clock
        self.encoder = encoder
        self.prepared = prepared
        self.catalog = catalog
        self.state = state
        self.interactions = interactions
        self.recent = recent
        self.overfetch = overfetch
        self.max_scan = max_scan
        self.exact_among = exact_among
        self._popular_seen: dict[str, list[tuple[str, float]]] = {}
        self._popular_at = float("-inf")

    def _allows(self, filters: Filters) -> _Allowed:
        return _Allowed(self.catalog, filters, self.exact_among)

    async def recommend(
        self, user_id: str, k: int, filters: Filters, now_ms: int | None = None
    ) -> Recommendations:
        """`ranked`, or while Redis fails or is slower than its client's timeout, the popular
        items last read from it (source `popular_cached`): degraded, never an error."""
        try:
            return await self.ranked(user_id, k, filters, now_ms)
        except RedisError as error:
            log.warning("Redis unavailable (%s): cached popular items", type(error).__name__)
            picks = _Picks(k, set(filters.exclude))
            allowed = self._allows(filters)
            for counter in _POPULAR_COUNTERS:
                for item_id, count in self._popular_seen.get(counter, []):
                    if allowed(item_id):
                        picks.take(item_id, count, "popular_cached")
            source = "popular_cached" if picks.items else "none"
            return Recommendations(user_id, picks.items, source, None)

    async def ranked(
        self, user_id: str, k: int, filters: Filters, now_ms: int | None = None
    ) -> Recommendations:
        """The version's ranking of every candidate source (as of `now_ms`, default the
        clock), widened by the tower's search when filters leave it short, then popular;
        for a version without ranking state: personalised, similar to recent, popular.

        Every model-ranked item is scored by the model version the index holds: the user's
        stored vector of that version, or the one this replica prepared for it (see
        `PreparedUsers`), else the user is embedded with that version here; a publish that
        lands mid-request restarts it.
        """
        if self.prepared is not None:
            self.prepared.requested(user_id)
        if time.monotonic() - self._popular_at > _POPULAR_REFRESH_S:  # the fallback's copy
            for counter in _POPULAR_COUNTERS:
                await self._top_items(counter, _POPULAR_KEPT)
        # one wait for both reads, not two in a row: the tail of a request is Redis's
        (history, purchased), stored = await asyncio.gather(
            self.interactions.user_context(user_id, limit=HISTORY_LEN),
            self.state.user_vector(user_id),
        )
        blocked = set(filters.exclude)
        if not filters.repeats:
            blocked |= purchased
            if filters.exclude_seen:
                blocked |= {h.item_id for h in history}
        allowed = self._allows(filters)
        for _ in range(_ATTEMPTS):
            stamp = self.index.stamp
            picks = _Picks(k, set(blocked))
            version = stamp.model_version
            ranking = None if version is None or self.rankings is None else self.rankings(version)
            user = await self._user_vector(version, user_id, stored, history)
            if ranking is not None:
                now = self.clock() if now_ms is None else now_ms
                await self._rank(ranking, user_id, history, user, picks, allowed, now)
                if not picks.full and user is not None:  # a strict filter: search wider
                    await self._search(user[0], picks, allowed, "personalized")
            else:
                if filters.repeats:
                    _take_repeats(history, picks, allowed, (k + 1) // 2)
                if user is not None:
                    await self._search(user[0], picks, allowed, "personalized")
                await self._similar_to_recent(history, picks, allowed)
            if self.index.stamp == stamp:
                break
        else:
            picks = _Picks(k, set(blocked))
            user, ranking = None, None
        modelled = ranking is not None or any(s.reason in _MODELLED for s in picks.items)
        if not picks.full:
            await self._popular(picks, allowed)
        source = picks.items[0].reason if picks.items else "none"
        as_of = user[1] if user is not None else (history[0].event_id if history else "")
        return Recommendations(
            user_id, picks.items, source, stamp.model_version if modelled else None, as_of
        )

    async def _rank(
        self,
        ranking: Ranking,
        user_id: str,
        history: list[HistoryEntry],
        user: tuple[npt.NDArray[np.float32], str] | None,
        picks: _Picks,
        allowed: Callable[[str], bool],
        now_ms: int,
    ) -> None:
        """Every candidate source, ranked by the version's ranker, as the evaluator ranks."""
        past = tuple(entry.interaction(user_id) for entry in reversed(history))
        request = RecommendRequest(user_id, past, now_ms, frozenset(picks.blocked))
        tower = None if user is None else IndexTower(self.index, user[0])
        k, attributes = picks.k - len(picks.items), self.catalog.attributes
        if self.index.searches_quickly:
            ranked = ranking.rank(request, tower, k, attributes, allowed)
        else:
            ranked = await asyncio.to_thread(ranking.rank, request, tower, k, attributes, allowed)
        for found in ranked:
            picks.take(found.item_id, found.score, found.reason)

    async def _user_vector(
        self,
        version: int | None,
        user_id: str,
        stored: UserVector | None,
        history: list[HistoryEntry],
    ) -> tuple[npt.NDArray[np.float32], str] | None:
        """The user's vector under `version` and the newest event it reflects, or None: the
        stored one, or the one prepared from their newest history, or made now (the fallback,
        counted: in the steady state every vector is made off the request path)."""
        if version is None:
            return None
        newest = history[0].event_id if history else ""
        fits = stored if stored is not None and stored.model_version == version else None
        if fits is not None and fits.as_of_event_id == newest:
            return fits.vector, newest
        prepared = None if self.prepared is None else self.prepared.get(user_id, version, newest)
        if prepared is not None:
            return prepared.vector, newest
        if fits is not None:  # the worker is about to write a newer one
            return fits.vector, fits.as_of_event_id
        if self.encoder is None or not history:
            return None
        # inline, ~1 ms: in a worker thread each torch op waited for the GIL behind the
        # event loop, and these requests made the soak's p99 (66-70 ms inline, 189-572 off)
        vector = self.encoder.encode(version, user_id, history)
        if vector is None:
            return None
        if self.prepared is not None:
            made = PreparedVector(vector, version, newest)
            self.prepared.put(user_id, made, on_request=True)
        return vector, newest

    async def _similar_to_recent(
        self, history: list[HistoryEntry], picks: _Picks, allowed: _Allowed
    ) -> None:
        recent = list(dict.fromkeys(h.item_id for h in history))[: self.recent]
        known = [i for i in recent if self.index.contains(i)]
        if picks.full or not known:
            return
        try:
            session = self.index.vectors(known).mean(axis=0)
        except VectorIndexError:  # removed since `contains`: the stamp check restarts us
            return
        norm = float(np.linalg.norm(session))
        if norm > 0:
            await self._search(session / norm, picks, allowed, "similar_to_recent")

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
        allowed: _Allowed,
        reason: str,
    ) -> None:
        """Nearest items the filters allow into `picks`: among a small category's items
        only (scored exactly), else over the index, searching wider while too few pass."""
        among = allowed.among()
        scope = self.index.size if among is None else len(among)
        size = min(scope, max(self.max_scan, picks.k))  # what one request may scan
        fetch = min(size, picks.k * self.overfetch + len(picks.blocked))
        while fetch > 0:
            quick = self.index.searches_quickly and among is None
            search = partial(self.index.search, vector, fetch, among)
            hits = (search() if quick else await asyncio.to_thread(search))[0]
            for item_id, score in zip(hits.ids, hits.scores, strict=True):
                if allowed(item_id):
                    picks.take(item_id, score, reason)
            if picks.full or fetch >= size:
                return
            fetch = min(size, fetch * 4)

    async def _top_items(self, counter: str, n: int) -> list[tuple[str, float]]:
        """The top `n` items by `counter`, also kept as the fallback for when Redis is away."""
        top = await self.interactions.top_items(counter, n)
        self._popular_seen[counter], self._popular_at = top, time.monotonic()
        return top

    async def _popular(self, picks: _Picks, allowed: Callable[[str], bool]) -> None:
        wanted = picks.k * self.overfetch + len(picks.blocked)
        indexed = self.index.size > 0
        for counter in _POPULAR_COUNTERS:
            for item_id, count in await self._top_items(counter, max(wanted, _POPULAR_KEPT)):
                if (not indexed or self.index.contains(item_id)) and allowed(item_id):
                    picks.take(item_id, count, "popular")
            if picks.full:
                return
