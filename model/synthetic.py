"""A synthetic e-commerce stream with the shape of real ones, for tests and load benchmarks.

Long-tail (Zipf) item popularity; items that appear and disappear over time; users whose
interest in a few topics drifts between sessions; sessions of clicks that stay mostly on
topic; some sessions end in an order of items clicked in them.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from model.interaction import Interaction

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
_EPOCHS = 50


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """Size and shape of the stream; everything random derives from `seed`.

    `order_rate` is the share of sessions that end in an order, `drift` the chance that a
    user picks up a new interest at a session, `on_topic` the share of clicks that follow it;
    user activity is Zipf with exponent `user_skew` (0: every user equally active).
    """

    users: int = 1_000
    items: int = 5_000
    topics: int = 0
    order_rate: float = 0.3
    drift: float = 0.15
    on_topic: float = 0.85
    user_skew: float = 0.8
    span_ms: int = 30 * 86_400_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < 1:
            raise ValueError("users and items must be >= 1")
        if not 0 <= self.order_rate <= 1 or not 0 <= self.drift <= 1:
            raise ValueError("order_rate and drift must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class SyntheticItem:
    item_id: str
    topic: int
    brand: str
    weight: float
    born_ms: int
    gone_ms: int


class SyntheticStream:
    """Generates events (a click, or an order of 1-3 items) in time order."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        rng = self._rng
        topics = config.topics or max(4, config.items // 100)
        ranks = list(range(config.items))
        rng.shuffle(ranks)
        self.items = [
            SyntheticItem(
                item_id=f"item-{i:06d}",
                topic=rng.randrange(topics),
                brand=f"brand-{rng.randrange(max(2, config.items // 50)):04d}",
                weight=1.0 / (ranks[i] + 1) ** 1.05,
                born_ms=START_MS
                + (0 if rng.random() < 0.3 else int(rng.random() * config.span_ms * 0.9)),
                gone_ms=START_MS + int(config.span_ms * (0.3 + rng.expovariate(1.0))),
            )
            for i in range(config.items)
        ]
        self.topics = topics
        self._user_weights = list(
            itertools.accumulate(1.0 / (r + 1) ** config.user_skew for r in range(config.users))
        )
        self._interest: dict[int, list[int]] = {}
        self._tables: dict[int, tuple[list[SyntheticItem], list[float]]] = {}
        self._every: list[SyntheticItem] = []
        self._every_weights: list[float] = []

    def item_features(self, item: SyntheticItem) -> dict[str, str]:
        return {"category": f"topic-{item.topic:03d}", "brand": item.brand}

    def _rebuild(self, now_ms: int) -> None:
        live = [i for i in self.items if i.born_ms <= now_ms < i.gone_ms] or self.items[:1]
        self._tables = {}
        by_topic: dict[int, list[SyntheticItem]] = {}
        for item in live:  # one pass: a scan per topic costs topics x items
            by_topic.setdefault(item.topic, []).append(item)
        for topic in range(self.topics):
            members = by_topic.get(topic)
            if members:
                cum = list(itertools.accumulate(i.weight for i in members))
                self._tables[topic] = (members, cum)
        self._every = live
        self._every_weights = list(itertools.accumulate(i.weight for i in live))

    def _pick(self, topic: int) -> SyntheticItem:
        members, cum = self._tables.get(topic, (self._every, self._every_weights))
        if self._rng.random() > self.config.on_topic:
            members, cum = self._every, self._every_weights
        index = bisect.bisect_left(cum, self._rng.random() * cum[-1])
        return members[min(index, len(members) - 1)]

    def events(self, n: int) -> Iterator[list[Interaction]]:
        """`n` events; each is a list of interactions sharing user and time (orders: 1-3)."""
        rng, config = self._rng, self.config
        gap_ms = max(1, config.span_ms // max(n, 1))
        epoch_ms = max(1, config.span_ms // _EPOCHS)
        now = START_MS
        next_rebuild = now
        produced = 0
        while produced < n:
            if now >= next_rebuild:
                self._rebuild(now)
                next_rebuild = now + epoch_ms
            user = bisect.bisect_left(self._user_weights, rng.random() * self._user_weights[-1])
            interest = self._interest.setdefault(user, [rng.randrange(self.topics)])
            if rng.random() < config.drift:
                interest.append(rng.randrange(self.topics))
                del interest[:-3]
            user_id = f"user-{user:06d}"
            clicked: list[SyntheticItem] = []
            for _ in range(min(rng.randint(1, 8), n - produced)):
                now += rng.randint(1, 2 * gap_ms)
                item = self._pick(rng.choice(interest))
                clicked.append(item)
                produced += 1
                yield [Interaction(user_id, item.item_id, "click", now)]
            if produced < n and rng.random() < config.order_rate:
                now += rng.randint(1, 2 * gap_ms)
                bought = rng.sample(clicked, k=min(len(clicked), rng.randint(1, 3)))
                produced += 1
                yield [
                    Interaction(user_id, i.item_id, "order", now, quantity=rng.randint(1, 3))
                    for i in bought
                ]


def synthetic_items(config: SyntheticConfig) -> Iterator[tuple[str, dict[str, str]]]:
    """Every item of the stream with its metadata (category = its topic, brand): users follow
    topics, so metadata carries signal."""
    stream = SyntheticStream(config)
    for item in stream.items:
        yield item.item_id, stream.item_features(item)


def synthetic_interactions(config: SyntheticConfig, events: int) -> Iterator[Interaction]:
    """The stream flattened to `events` events' interactions (an order yields one per item)."""
    for event in SyntheticStream(config).events(events):
        yield from event
