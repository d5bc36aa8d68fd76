"""The plain record every layer shares: one user-item interaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

InteractionKind = Literal["click", "order"]
INTERACTION_KINDS: tuple[InteractionKind, ...] = ("click", "order")  # a kind's code: its index


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
