"""A fixed-size uniform sample of everything seen so far (reservoir sampling, Algorithm R)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class ReplayBuffer(Generic[T]):
    """Keeps each of the `seen` items with equal probability `capacity / seen`.

    >>> buffer = ReplayBuffer[int](capacity=3, seed=0)
    >>> buffer.extend(range(100))
    >>> len(buffer), buffer.seen
    (3, 100)
    """

    def __init__(self, capacity: int, *, seed: int = 0) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.seen = 0
        self._items: list[T] = []
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self._items)

    def extend(self, items: Iterable[T]) -> None:
        for item in items:
            self.seen += 1
            if len(self._items) < self.capacity:
                self._items.append(item)
            else:
                slot = self._rng.randrange(self.seen)
                if slot < self.capacity:
                    self._items[slot] = item

    def sample(self, n: int) -> list[T]:
        """Up to `n` distinct stored items, uniformly."""
        return self._rng.sample(self._items, min(n, len(self._items)))
