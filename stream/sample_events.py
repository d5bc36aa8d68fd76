"""A small synthetic e-commerce stream (long-tail items, clicks turning into orders)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime

from stream.events import ClickEvent, OrderEvent, OrderLine

_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def sample_events(
    n: int, *, users: int = 500, items: int = 2_000, order_rate: float = 0.05, seed: int = 0
) -> Iterator[ClickEvent | OrderEvent]:
    """`n` events in time order; item popularity is Zipf-like, ids are deterministic in `seed`."""
    rng = random.Random(seed)
    cum_weights = list(itertools.accumulate(1.0 / (rank + 1) ** 1.1 for rank in range(items)))
    item_ids = [f"item-{i:05d}" for i in range(items)]
    recent: dict[str, list[str]] = {}
    ts = _START_MS
    for number in range(n):
        ts += rng.randint(10, 2_000)
        user_id = f"user-{rng.randrange(users):04d}"
        event_id = f"s{seed}-{number:08d}"
        clicked = recent.setdefault(user_id, [])
        if clicked and rng.random() < order_rate:
            picks = rng.sample(clicked, k=min(len(clicked), rng.randint(1, 3)))
            lines = [
                OrderLine(
                    item_id=i, quantity=rng.randint(1, 3), price=round(rng.uniform(2, 200), 2)
                )
                for i in picks
            ]
            yield OrderEvent(
                event_id=event_id,
                user_id=user_id,
                ts=datetime.fromtimestamp(ts / 1000, UTC),
                order_id=f"o-{event_id}",
                items=lines,
            )
            clicked.clear()
            continue
        item_id = rng.choices(item_ids, cum_weights=cum_weights)[0]
        clicked.append(item_id)
        del clicked[:-20]
        yield ClickEvent(
            event_id=event_id,
            user_id=user_id,
            ts=datetime.fromtimestamp(ts / 1000, UTC),
            item_id=item_id,
        )
