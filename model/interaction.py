"""The plain records every layer shares: one user-item interaction, the interactions one event
contributes, and the one table of interaction kinds and their codes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

InteractionKind = Literal["click", "order"]
INTERACTION_KINDS: tuple[InteractionKind, ...] = ("click", "order")  # a kind's code: its index


class Interacted(Protocol):
    """What a user tower reads of an interaction: an `Interaction`, or a history entry read
    back from a store as it is (no conversion per entry on the serving path)."""

    @property
    def item_id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def ts_ms(self) -> int: ...


def kind_code(kind: InteractionKind) -> int:
    """A kind's code in packed tables and checkpoints: its index in `INTERACTION_KINDS`.

    >>> kind_code("click"), kind_code("order")
    (0, 1)
    """
    return INTERACTION_KINDS.index(kind)


def own_items(item_ids_newest_first: Iterable[str]) -> list[tuple[str, int]]:
    """A user's items with how often they touched each, most often first, then most recent:
    the repeat-purchase order the recommender's own-items source and serving share.

    >>> own_items(["b", "a", "c", "a", "b", "a"])
    [('a', 3), ('b', 2), ('c', 1)]
    """
    counts: dict[str, int] = {}
    for item in item_ids_newest_first:  # dicts keep first insertion: the newest touch
        counts[item] = counts.get(item, 0) + 1
    return sorted(counts.items(), key=lambda pair: -pair[1])


def kind_of(value: object) -> InteractionKind:
    """A stored kind read back: "order" is an order, anything else a click."""
    return "order" if value == "order" else "click"


@dataclass(frozen=True, slots=True)
class Interaction:
    """A user touched an item: `kind` says how, `ts_ms` when (epoch milliseconds).

    >>> Interaction("u1", "i9", "order", 1_700_000_000_000, quantity=2).quantity
    2
    """

    user_id: str
    item_id: str
    kind: InteractionKind
    ts_ms: int
    quantity: int = 1


@dataclass(frozen=True, slots=True)
class EventEffect:
    """The interactions one event contributes, keyed by its idempotency id."""

    event_id: str
    user_id: str
    interactions: tuple[Interaction, ...]

    @property
    def ts_ms(self) -> int:
        """The event's time (its interactions share it); 0 for an effect with none."""
        return self.interactions[0].ts_ms if self.interactions else 0
