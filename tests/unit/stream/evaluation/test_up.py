"""`recstream up`'s sample: wire events that end now, orders whole, metadata for the items."""

from __future__ import annotations

from stream.evaluation.up import UpOptions, sample
from stream.events.schema import OrderEvent


def test_the_sample_ends_now_keeps_orders_whole_and_describes_its_items() -> None:
    now_ms = 1_900_000_000_000
    data = sample(UpOptions(events=500), now_ms)
    assert len(data.events) == 500
    assert len({e.event_id for e in data.events}) == 500
    times = [e.ts_ms for e in data.events]
    assert times == sorted(times)
    assert now_ms - 2_000 <= times[-1] <= now_ms
    orders = [e for e in data.events if isinstance(e, OrderEvent)]
    assert orders
    assert any(len(o.items) > 1 for o in orders)
    assert all(data.items[line.item_id].category for o in orders for line in o.items)
    assert data.users[0] == max(data.users, key=lambda u: sum(e.user_id == u for e in data.events))
