"""Sample events for the demo and benchmarks: the synthetic stream as wire events."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from model.interaction import Interaction
from model.synthetic import SyntheticConfig, SyntheticStream
from stream.events.schema import ClickEvent, OrderEvent, OrderLine


def sample_events(
    n: int,
    *,
    users: int = 500,
    items: int = 2_000,
    order_rate: float = 0.3,
    user_skew: float = 0.8,
    seed: int = 0,
) -> Iterator[ClickEvent | OrderEvent]:
    """`n` events in time order (see `model.synthetic`; `order_rate` per session)."""
    config = SyntheticConfig(
        users=users, items=items, order_rate=order_rate, user_skew=user_skew, seed=seed
    )
    for number, event in enumerate(SyntheticStream(config).events(n)):
        yield wire_event(f"s{seed}-{number:08d}", event)


def wire_event(event_id: str, group: Sequence[Interaction]) -> ClickEvent | OrderEvent:
    """One logged or generated event as the wire takes it: a click, or an order of the
    group's lines (each priced, order id from the event id)."""
    first = group[0]
    ts = datetime.fromtimestamp(first.ts_ms / 1000, UTC)
    if first.kind == "click":
        return ClickEvent(event_id=event_id, user_id=first.user_id, ts=ts, item_id=first.item_id)
    lines = [
        OrderLine(item_id=i.item_id, quantity=i.quantity, price=_price(i.item_id)) for i in group
    ]
    return OrderEvent(
        event_id=event_id, user_id=first.user_id, ts=ts, order_id=f"o-{event_id}", items=lines
    )


def _price(item_id: str) -> float:
    """A stable price per item, 2.00 to 199.99."""
    return 2 + (sum(map(ord, item_id)) * 7919) % 19_800 / 100
