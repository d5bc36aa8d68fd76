"""Candidate sources learned online from the stream, each bounded: item-to-item co-visitation
(decayed, top-N neighbours per item) and item popularity (all-time and trending)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from model.errors import ModelError
from model.interaction import Interaction
from model.packed import pack_strings, unpack_strings
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

    def state_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "origin_ms": self.origin_ms}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rate, self.origin_ms = float(state["rate"]), state["origin_ms"]


class ItemPopularity:
    """How often each item was interacted with: all-time and, with `half_life_ms`, decayed
    (trending). Items are columns of `catalogue`, in order of first sighting."""

    def __init__(self, half_life_ms: float | None = 3 * 86_400_000) -> None:
        self.catalogue = Catalogue()
        self.first_ms = np.zeros(1024, dtype=np.int64)
        self.counts = np.zeros(1024, dtype=np.float64)
        self.trending = np.zeros(1024, dtype=np.float64)
        self._clock = DecayClock(half_life_ms) if half_life_ms else None
        self._top: dict[tuple[int, bool], list[str]] = {}
        self._peak: dict[bool, float] = {}

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
        self._top.clear()
        self._peak.clear()
        if self._clock is not None:
            factor = self._clock.rescale(ts_ms)
            if factor is not None:
                self.trending *= factor
            self.trending[column] += self._clock.weight(ts_ms)
        return column

    def scores(self, trending: bool = False) -> npt.NDArray[np.float64]:
        """A score per column: the count, or the decayed count."""
        return (self.trending if trending else self.counts)[: len(self.catalogue)]

    def peak(self, trending: bool = False) -> float:
        """The highest score (0 before any item); kept until the next `add`, like `top`: a
        scan of the catalogue, 0.15 ms a request at 1M items."""
        found = self._peak.get(trending)
        if found is None:
            scores = self.scores(trending)
            found = self._peak[trending] = float(scores.max()) if len(scores) else 0.0
        return found

    def top(self, n: int, trending: bool = False) -> list[str]:
        """The `n` most popular item ids (all-time, or trending now); kept until the next
        `add`, as every request of a batch asks for the same lists."""
        size = max(64, 1 << max(n - 1, 0).bit_length())  # a few sizes serve every n
        found = self._top.get((size, trending))
        if found is None:
            found = [self.catalogue.ids[c] for c in best_first(self.scores(trending), size)]
            self._top[(size, trending)] = found
        return found[:n]

    def count(self, item_id: str) -> float:
        """How often `item_id` was interacted with (0 for an item never seen)."""
        column = self.catalogue.column.get(item_id)
        return 0.0 if column is None else float(self.counts[column])

    def state_dict(self) -> dict[str, Any]:
        """Plain containers and tensors (checkpoint-safe)."""
        n = len(self.catalogue)
        return {
            "ids": pack_strings(self.catalogue.ids),
            "first_ms": torch.from_numpy(self.first_ms[:n].copy()),
            "counts": torch.from_numpy(self.counts[:n].copy()),
            "trending": torch.from_numpy(self.trending[:n].copy()),
            "clock": None if self._clock is None else self._clock.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._top.clear()
        self._peak.clear()
        self.catalogue = Catalogue(unpack_strings(state["ids"]))
        self.first_ms = state["first_ms"].numpy().astype(np.int64)
        self.counts = state["counts"].numpy().astype(np.float64)
        self.trending = state["trending"].numpy().astype(np.float64)
        if len(self.counts) == 0:  # `add` grows the arrays by doubling
            self.first_ms = np.zeros(1, dtype=np.int64)
            self.counts, self.trending = np.zeros(1), np.zeros(1)
        if state["clock"] is None:
            self._clock = None
        else:
            self._clock = DecayClock(1.0)
            self._clock.load_state_dict(state["clock"])


Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CovisitScores:
    """Co-visitation scores of one request: item codes (ascending) and their scores."""

    catalogue: Catalogue
    codes: npt.NDArray[np.int64]
    values: Vector

    def ids(self) -> list[str]:
        return [self.catalogue.ids[c] for c in self.codes]

    def top(self, n: int) -> list[str]:
        """The `n` best-scored items, best first."""
        return [self.catalogue.ids[self.codes[c]] for c in best_first(self.values, n)]

    def of(self, ids: Sequence[str]) -> Vector:
        """The score of each of `ids` (0 for an item it did not score)."""
        column = self.catalogue.column
        wanted = np.fromiter((column.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        at = np.searchsorted(self.codes, wanted)
        at = np.minimum(at, max(len(self.codes) - 1, 0))
        out = np.zeros(len(ids))
        if len(self.codes):
            hit = self.codes[at] == wanted
            out[hit] = self.values[at[hit]]
        return out


@dataclass(frozen=True, slots=True)
class _SavedRows:
    """A loaded state's rows as one CSR, by item code: read in place, never unpacked whole."""

    starts: npt.NDArray[np.int64]
    sizes: npt.NDArray[np.int64]
    codes: npt.NDArray[np.int64]
    weights: Vector

    def row(self, code: int | None) -> tuple[npt.NDArray[np.int64], Vector] | None:
        if code is None or code >= len(self.sizes) or not self.sizes[code]:
            return None
        start, size = int(self.starts[code]), int(self.sizes[code])
        return self.codes[start : start + size], self.weights[start : start + size]


class _Row:
    """One item's learned neighbours as arrays (codes, weights), in the order they were first
    linked: about a quarter of a dict's memory an entry, and read as is by scoring."""

    __slots__ = ("codes", "size", "weights")

    def __init__(self, codes: npt.NDArray[np.int64] | None = None, weights: Vector | None = None):
        self.codes = np.zeros(8, dtype=np.int64) if codes is None else codes.copy()
        self.weights = np.zeros(8) if weights is None else weights.astype(np.float64)
        self.size = len(self.codes) if codes is not None else 0

    def add(self, code: int, weight: float) -> None:
        n = self.size
        found = np.flatnonzero(self.codes[:n] == code)
        if len(found):
            self.weights[found[0]] += weight
            return
        if n == len(self.codes):
            self.codes = np.concatenate([self.codes, np.zeros(max(n, 8), dtype=np.int64)])
            self.weights = np.concatenate([self.weights, np.zeros(max(n, 8))])
        self.codes[n], self.weights[n] = code, weight
        self.size = n + 1

    def keep_heaviest(self, n: int) -> None:
        """Only the `n` heaviest entries, heaviest first (ties: the earlier linked first)."""
        order = np.argsort(-self.weights[: self.size], kind="stable")[:n]
        self.codes, self.weights = self.codes[order], self.weights[order]
        self.size = len(order)

    def view(self) -> tuple[npt.NDArray[np.int64], Vector]:
        return self.codes[: self.size], self.weights[: self.size]


class CoVisitation:
    """Item-to-item neighbours from users' consecutive interactions, maintained online.

    Each event adds a decayed weight between its item and each of the user's `window` previous
    items (nearer ones weigh more). A row keeps its `cap` heaviest neighbours (pruned when it
    reaches twice that), so memory is at most `2 * cap` entries per item; rows are arrays of
    item codes and weights. A loaded state keeps its rows as saved (one CSR, what scoring
    reads) and copies a row out only when it learns: replicas load a state per model version
    and only score.
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
        self._rows: dict[str, _Row] = {}  # rows learned since the load
        self.catalogue = Catalogue()  # a code per item: rows, CSR and masses are by code
        self._mass_of = np.zeros(1024)  # each item's total link weight, by code
        self._saved: _SavedRows | None = None
        self._clock = DecayClock(half_life_ms)

    @property
    def rows(self) -> dict[str, dict[str, float]]:
        """The rows learned since the load, as dicts (for inspection: a copy)."""
        return {item: self._as_dict(*row.view()) for item, row in self._rows.items()}

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

    def mass(self, item: str) -> float:
        """`item`'s total link weight (0 for an item never linked)."""
        code = self.catalogue.column.get(item)
        return 0.0 if code is None else float(self._mass_of[code])

    def _row(self, item: str) -> _Row:
        """`item`'s row to change: a loaded state's row is copied out when first learned."""
        row = self._rows.get(item)
        if row is None:
            saved = self._saved_row(item)
            row = self._rows[item] = _Row() if saved is None else _Row(*saved)
        return row

    def _saved_row(self, item: str) -> tuple[npt.NDArray[np.int64], Vector] | None:
        """`item`'s row as loaded, unless it has learned since."""
        if self._saved is None or item in self._rows:
            return None
        return self._saved.row(self.catalogue.column.get(item))

    def _as_dict(self, codes: npt.NDArray[np.int64], weights: Vector) -> dict[str, float]:
        ids = self.catalogue.ids
        return dict(zip([ids[c] for c in codes.tolist()], weights.tolist(), strict=True))

    def _link(self, source: str, target: str, weight: float) -> None:
        row = self._row(source)
        row.add(self._code(target), weight)
        code = self._code(source)  # may grow `_mass_of`: index the array only after it
        self._mass_of[code] += weight
        if row.size >= 2 * self.cap:
            row.keep_heaviest(self.cap)

    def _code(self, item: str) -> int:
        code = self.catalogue.add(item)
        if code >= len(self._mass_of):
            self._mass_of = np.concatenate([self._mass_of, np.zeros_like(self._mass_of)])
        return code

    def _scale(self, factor: float) -> None:
        for row in self._rows.values():
            row.weights[: row.size] *= factor
        self._mass_of *= factor
        if self._saved is not None:
            self._saved.weights[:] *= factor  # our own copy, made at load

    def scores(self, recent: Sequence[str], decay: float = 0.9) -> dict[str, float]:
        """Neighbours of the user's `recent` items (newest last), weighted by how recent each
        item is, each link normalised by both ends' mass (cosine, as item-kNN does, so that
        popular neighbours do not win by popularity alone): a score per candidate item."""
        found = self.scored(recent, decay)
        return dict(zip(found.ids(), found.values.tolist(), strict=True))

    def scored(self, recent: Sequence[str], decay: float = 0.9) -> CovisitScores:
        """`scores` as arrays (the form candidates are built from: no dict per request)."""
        codes, weights = [], []
        for age, item in enumerate(reversed(recent)):
            row = self._row_arrays(item)
            if row is not None:
                scale = decay**age / math.sqrt(self.mass(item))
                codes.append(row[0])
                weights.append(row[1] * scale)
        if not codes:
            return CovisitScores(self.catalogue, np.zeros(0, dtype=np.int64), np.zeros(0))
        unique, inverse = np.unique(np.concatenate(codes), return_inverse=True)
        sums = np.bincount(inverse, weights=np.concatenate(weights))
        return CovisitScores(self.catalogue, unique, sums / np.sqrt(self._mass_of[unique]))

    def _row_arrays(self, item: str) -> tuple[npt.NDArray[np.int64], Vector] | None:
        """`item`'s row as (neighbour codes, weights): learned since the load, or as loaded
        (views: read them before the next `learn`)."""
        row = self._rows.get(item)
        if row is None:
            return self._saved_row(item)
        return row.view() if row.size else None

    def entries(self) -> int:
        """Neighbour entries held, over every item (the memory bound's measure)."""
        learned = sum(row.size for row in self._rows.values())
        if self._saved is None:
            return learned
        column, sizes = self.catalogue.column, self._saved.sizes
        replaced = sum(int(sizes[c]) for c in map(column.__getitem__, self._rows) if c < len(sizes))
        return learned + int(sizes.sum()) - replaced

    def neighbour_rows(self) -> dict[str, dict[str, float]]:
        """Every row as a dict, those still as loaded included."""
        rows = self.rows
        if self._saved is not None:
            ids = self.catalogue.ids
            for code in np.flatnonzero(self._saved.sizes).tolist():
                saved = self._saved.row(code)
                if ids[code] not in rows and saved is not None:
                    rows[ids[code]] = self._as_dict(*saved)
        return rows

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint-safe: the rows as one CSR over the item codes (ids saved in code order),
        joined from each row's arrays (the trainer saves one at every model version)."""
        ids = self.catalogue.ids
        sizes = np.zeros(len(ids), dtype=np.int64)
        targets: list[npt.NDArray[np.int64]] = [np.zeros(0, dtype=np.int64)]
        weights: list[Vector] = [np.zeros(0)]
        for code, item in enumerate(ids):
            row = self._row_arrays(item)
            if row is not None:
                sizes[code] = len(row[0])
                targets.append(row[0])
                weights.append(row[1])
        return {
            "settings": [self.window, self.cap, self.step_decay],
            "clock": self._clock.state_dict(),
            "ids": pack_strings(ids),
            "mass": torch.from_numpy(self._mass_of[: len(ids)].copy()),
            "sizes": torch.from_numpy(sizes),
            "targets": torch.from_numpy(np.concatenate(targets)),
            "weights": torch.from_numpy(np.concatenate(weights)),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        window, cap, step_decay = state["settings"]
        self.window, self.cap, self.step_decay = int(window), int(cap), float(step_decay)
        self._clock.load_state_dict(state["clock"])
        ids = unpack_strings(state["ids"])
        self._rows = {}
        self.catalogue = Catalogue(ids)  # saved ids are distinct; `targets` index them
        self._mass_of = np.zeros(max(1024, 2 * len(ids)))  # `_code` grows it by doubling
        self._mass_of[: len(ids)] = state["mass"].numpy()
        sizes = state["sizes"].numpy().astype(np.int64)
        self._saved = _SavedRows(
            starts=np.cumsum(sizes) - sizes,
            sizes=sizes,
            codes=state["targets"].numpy().astype(np.int64),
            weights=state["weights"].numpy().astype(np.float64),  # a copy: `_scale` writes it
        )


def top_by_score(scores: dict[str, float], n: int) -> list[str]:
    """The `n` keys with the highest scores, best first."""
    keys = list(scores)
    values = np.fromiter(scores.values(), dtype=np.float64, count=len(keys))
    return [keys[c] for c in best_first(values, n)]


def best_first(values: npt.NDArray[np.floating[Any]], n: int) -> list[int]:
    """Indices of the `n` largest `values`, largest first (ties: the lower index first)."""
    n = min(n, len(values))
    if n <= 0:
        return []
    best = np.argpartition(-values, n - 1)[:n]
    return [int(c) for c in best[np.argsort(-values[best], kind="stable")]]
