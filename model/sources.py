"""Candidate sources learned online from the stream, each bounded: item-to-item co-visitation
(decayed, top-N neighbours per item) and item popularity (all-time and trending)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from model.errors import ModelError
from model.interaction import Interaction
from model.recommender import Catalogue


class SourceConfigError(ModelError, ValueError):
    """A candidate source was configured with impossible bounds."""


class DecayClock:
    """exp(rate * (t - origin)): adding this weight at time t and never touching old weights
    is an exponential decay of everything older. Callers rescale when `rescale` says so."""

    def __init__(self, half_life_ms: float) -> None:
        if half_life_ms <= 0:
            raise SourceConfigError("half_life_ms must be positive")
        self.rate = math.log(2) / half_life_ms
        self.origin_ms: int | None = None

    def weight(self, ts_ms: int) -> float:
        if self.origin_ms is None:
            self.origin_ms = ts_ms
        return math.exp(min(self.rate * (ts_ms - self.origin_ms), 700.0))

    def rescale(self, ts_ms: int) -> float | None:
        """The factor to multiply every stored weight by when weights grow too large (moving
        the origin to `ts_ms`), else None."""
        if self.origin_ms is None or self.rate * (ts_ms - self.origin_ms) < 50:
            return None
        factor = math.exp(-self.rate * (ts_ms - self.origin_ms))
        self.origin_ms = ts_ms
        return factor


class ItemPopularity:
    """How often each item was interacted with: all-time and, with `half_life_ms`, decayed
    (trending). Items are columns of `catalogue`, in order of first sighting."""

    def __init__(self, half_life_ms: float | None = 3 * 86_400_000) -> None:
        self.catalogue = Catalogue()
        self.first_ms = np.zeros(1024, dtype=np.int64)
        self.counts = np.zeros(1024, dtype=np.float64)
        self.trending = np.zeros(1024, dtype=np.float64)
        self._clock = DecayClock(half_life_ms) if half_life_ms else None

    def __len__(self) -> int:
        return len(self.catalogue)

    def add(self, item_id: str, ts_ms: int) -> int:
        """Count one interaction; returns the item's column."""
        known = len(self.catalogue)
        column = self.catalogue.add(item_id)
        if column == known:
            if column >= len(self.counts):
                self.counts = np.concatenate([self.counts, np.zeros_like(self.counts)])
                self.trending = np.concatenate([self.trending, np.zeros_like(self.trending)])
                self.first_ms = np.concatenate([self.first_ms, np.zeros_like(self.first_ms)])
            self.first_ms[column] = ts_ms
        self.counts[column] += 1
        if self._clock is not None:
            factor = self._clock.rescale(ts_ms)
            if factor is not None:
                self.trending *= factor
            self.trending[column] += self._clock.weight(ts_ms)
        return column

    def scores(self, trending: bool = False) -> npt.NDArray[np.float64]:
        """A score per column: the count, or the decayed count."""
        return (self.trending if trending else self.counts)[: len(self.catalogue)]

    def top(self, n: int, trending: bool = False) -> list[str]:
        """The `n` most popular item ids (all-time, or trending now)."""
        return [self.catalogue.ids[c] for c in best_first(self.scores(trending), n)]


class CoVisitation:
    """Item-to-item neighbours from users' consecutive interactions, maintained online.

    Each event adds a decayed weight between its item and each of the user's `window` previous
    items (nearer ones weigh more). A row keeps its `cap` heaviest neighbours (pruned when it
    reaches twice that), so memory is at most `2 * cap` entries per item.
    """

    def __init__(
        self,
        window: int = 10,
        cap: int = 100,
        half_life_ms: float = 30 * 86_400_000,
        step_decay: float = 0.8,
    ) -> None:
        if window < 1 or cap < 1 or not 0 < step_decay <= 1:
            raise SourceConfigError("window and cap must be >= 1, step_decay in (0, 1]")
        self.window, self.cap, self.step_decay = window, cap, step_decay
        self.rows: dict[str, dict[str, float]] = {}
        self.mass: dict[str, float] = {}
        self._clock = DecayClock(half_life_ms)

    def learn(self, history: Sequence[Interaction], target: Interaction) -> None:
        """Link `target` with the user's items before it."""
        factor = self._clock.rescale(target.ts_ms)
        if factor is not None:
            self._scale(factor)
        weight = self._clock.weight(target.ts_ms)
        item = target.item_id
        for distance, earlier in enumerate(reversed(history[-self.window :])):
            other = earlier.item_id
            if other == item:
                continue
            w = weight * self.step_decay**distance
            self._link(other, item, w)
            self._link(item, other, w)

    def _link(self, source: str, target: str, weight: float) -> None:
        row = self.rows.setdefault(source, {})
        row[target] = row.get(target, 0.0) + weight
        self.mass[source] = self.mass.get(source, 0.0) + weight
        if len(row) >= 2 * self.cap:
            kept = sorted(row.items(), key=lambda kv: kv[1], reverse=True)[: self.cap]
            self.rows[source] = dict(kept)

    def _scale(self, factor: float) -> None:
        for row in self.rows.values():
            for key in row:
                row[key] *= factor
        for key in self.mass:
            self.mass[key] *= factor

    def scores(self, recent: Sequence[str], decay: float = 0.9) -> dict[str, float]:
        """Neighbours of the user's `recent` items (newest last), weighted by how recent each
        item is, each link normalised by both ends' mass (cosine, as item-kNN does, so that
        popular neighbours do not win by popularity alone): a score per candidate item."""
        out: dict[str, float] = {}
        mass = self.mass
        for age, item in enumerate(reversed(recent)):
            row = self.rows.get(item)
            if not row:
                continue
            scale = decay**age / math.sqrt(mass[item])
            for other, weight in row.items():
                out[other] = out.get(other, 0.0) + weight * scale
        return {other: score / math.sqrt(mass[other]) for other, score in out.items()}

    def entries(self) -> int:
        """Neighbour entries held, over every item (the memory bound's measure)."""
        return sum(len(row) for row in self.rows.values())


def top_by_score(scores: dict[str, float], n: int) -> list[str]:
    """The `n` keys with the highest scores, best first."""
    keys = list(scores)
    values = np.fromiter(scores.values(), dtype=np.float64, count=len(keys))
    return [keys[c] for c in best_first(values, n)]


def best_first(values: npt.NDArray[np.float64], n: int) -> list[int]:
    """Indices of the `n` largest `values`, largest first (ties: the lower index first)."""
    n = min(n, len(values))
    if n <= 0:
        return []
    best = np.argpartition(-values, n - 1)[:n]
    return [int(c) for c in best[np.argsort(-values[best], kind="stable")]]
