"""Baselines scored beside the model: popularity, recent popularity, item-kNN, incremental MF,
and the user's own most frequent items (the next-basket floor)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from model.recommender import Catalogue, RecommendRequest, SystemKind
from model.sources import ItemPopularity
from model.trainer import TrainingExample


def _grown(array: npt.NDArray[Any], rows: int) -> npt.NDArray[Any]:
    """`array` with at least `rows` rows (zero-filled), doubling to amortise growth."""
    if rows <= len(array):
        return array
    bigger = np.zeros((max(rows, 2 * len(array)), *array.shape[1:]), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


class PopularityRecommender:
    """Most-interacted items; with `half_life_ms`, interactions fade exponentially with age."""

    kind: SystemKind = "baseline"

    def __init__(self, half_life_ms: float | None = None, name: str = "popularity") -> None:
        self.name = name
        self.popularity = ItemPopularity(half_life_ms)
        self._trending = bool(half_life_ms)

    def learn_many(self, batch: Sequence[TrainingExample]) -> None:
        for example in batch:
            self.popularity.add(example.target.item_id, example.target.ts_ms)

    def recommend_many(self, requests: Sequence[RecommendRequest], k: int) -> list[list[str]]:
        scores = self.popularity.scores(self._trending).astype(np.float32)
        return self.popularity.catalogue.top_k(np.tile(scores, (len(requests), 1)), requests, k)


class ItemKNNRecommender:
    """Item-to-item co-occurrence (cosine) over the user's `recent` items, recency-weighted.

    Pairs within `window` consecutive interactions are counted in a sparse matrix; new
    pairs wait in a small pending matrix merged every `merge_every` pairs (amortised).
    Items never co-visited fall back to popularity.
    """

    name = "item_knn"
    kind: SystemKind = "baseline"

    def __init__(
        self, recent: int = 20, window: int = 10, decay: float = 0.9, merge_every: int = 200_000
    ) -> None:
        self.recent, self.window, self.decay = recent, window, decay
        self.merge_every = merge_every
        self.catalogue = Catalogue()
        self._counts = np.zeros(1024, dtype=np.float32)
        self._merged = _coo(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), 0)
        self._pending: list[tuple[int, int]] = []

    def learn_many(self, batch: Sequence[TrainingExample]) -> None:
        add = self.catalogue.add
        for example in batch:
            target = add(example.target.item_id)
            self._counts = _grown(self._counts, target + 1)
            self._counts[target] += 1
            for earlier in example.history[-self.window :]:
                other = add(earlier.item_id)
                if other != target:
                    self._pending += [(other, target), (target, other)]
        if len(self._pending) >= self.merge_every:
            pending = self._pending_matrix()
            merged = _coo(self._merged.indices(), self._merged.values(), len(self.catalogue))
            self._merged = (merged + pending).coalesce()
            self._pending = []

    def _pending_matrix(self) -> torch.Tensor:
        fresh = torch.tensor(self._pending, dtype=torch.long).reshape(-1, 2).T
        return _coo(fresh, torch.ones(fresh.shape[1]), len(self.catalogue)).coalesce()

    def recommend_many(self, requests: Sequence[RecommendRequest], k: int) -> list[list[str]]:
        size = len(self.catalogue)
        if size == 0:
            return [[] for _ in requests]
        counts = torch.from_numpy(self._counts[:size])
        norm = 1.0 / torch.sqrt(counts.clamp(min=1.0))
        query = torch.zeros(size, len(requests))
        for b, request in enumerate(requests):
            for age, seen in enumerate(reversed(request.history[-self.recent :])):
                column = self.catalogue.column.get(seen.item_id)
                if column is not None:
                    query[column, b] += self.decay**age
        query *= norm.unsqueeze(1)
        merged = _coo(self._merged.indices(), self._merged.values(), size, coalesced=True)
        scores = torch.sparse.mm(merged, query) + torch.sparse.mm(self._pending_matrix(), query)
        scores = scores.T * norm + 1e-6 * counts / counts.max().clamp(min=1.0)
        return self.catalogue.top_k(scores.numpy(), requests, k)


def _coo(
    indices: torch.Tensor, values: torch.Tensor, size: int, coalesced: bool = False
) -> torch.Tensor:
    """A square sparse matrix; `coalesced` vouches that `indices` are sorted and unique."""
    return torch.sparse_coo_tensor(
        indices, values, (size, size), check_invariants=False, is_coalesced=coalesced or None
    )


class IncrementalMFRecommender:
    """Matrix factorisation updated by SGD on each event against sampled negatives."""

    name = "incremental_mf"
    kind: SystemKind = "baseline"

    def __init__(
        self,
        dim: int = 32,
        learning_rate: float = 0.1,
        regularisation: float = 0.01,
        negatives: int = 8,
        seed: int = 0,
    ) -> None:
        self.dim, self.lr, self.reg, self.negatives = dim, learning_rate, regularisation, negatives
        self.catalogue = Catalogue()
        self._rng = np.random.default_rng(seed)
        self._users: dict[str, int] = {}
        self._user_vectors = np.zeros((1024, dim), dtype=np.float32)
        self._item_vectors = np.zeros((1024, dim), dtype=np.float32)
        self._item_bias = np.zeros(1024, dtype=np.float32)

    def _user(self, user_id: str) -> int:
        row = self._users.get(user_id)
        if row is None:
            row = self._users[user_id] = len(self._users)
            self._user_vectors = _grown(self._user_vectors, row + 1)
            self._user_vectors[row] = self._rng.normal(0, 0.1, self.dim)
        return row

    def learn_many(self, batch: Sequence[TrainingExample]) -> None:
        for example in batch:
            user = self._user(example.target.user_id)
            target = self.catalogue.add(example.target.item_id)
            if target + 1 > len(self._item_bias):
                self._item_vectors = _grown(self._item_vectors, target + 1)
                self._item_bias = _grown(self._item_bias, target + 1)
            if not self._item_vectors[target].any():
                self._item_vectors[target] = self._rng.normal(0, 0.1, self.dim)
            sampled = self._rng.integers(0, len(self.catalogue), self.negatives)
            items = np.concatenate([[target], sampled[sampled != target]])
            labels = np.zeros(len(items), dtype=np.float32)
            labels[0] = 1.0
            u = self._user_vectors[user]
            q = self._item_vectors[items]
            logits = q @ u + self._item_bias[items]
            error = 1.0 / (1.0 + np.exp(-logits)) - labels
            self._user_vectors[user] -= self.lr * (error @ q + self.reg * u)
            self._item_vectors[items] -= self.lr * (np.outer(error, u) + self.reg * q)
            self._item_bias[items] -= self.lr * error

    def recommend_many(self, requests: Sequence[RecommendRequest], k: int) -> list[list[str]]:
        size = len(self.catalogue)
        users = np.stack(
            [
                self._user_vectors[self._users[r.user_id]]
                if r.user_id in self._users
                else np.zeros(self.dim, dtype=np.float32)
                for r in requests
            ]
        )
        scores = users @ self._item_vectors[:size].T + self._item_bias[:size]
        return self.catalogue.top_k(scores.astype(np.float32), requests, k)


class PersonalFrequencyRecommender:
    """The user's own items, most often first and then most recent, filled with popularity:
    the floor any repeat-purchase (next-basket) recommender must clear. Where the request
    excludes the user's items (no repeats), it is popularity."""

    name = "personal_frequency"
    kind: SystemKind = "baseline"

    def __init__(self) -> None:
        self.catalogue = Catalogue()
        self._popularity = np.zeros(1024, dtype=np.float64)
        self._own: dict[str, dict[int, tuple[int, int]]] = {}  # user -> column -> (count, ts)

    def learn_many(self, batch: Sequence[TrainingExample]) -> None:
        for example in batch:
            target = example.target
            column = self.catalogue.add(target.item_id)
            self._popularity = _grown(self._popularity, column + 1)
            self._popularity[column] += 1
            own = self._own.setdefault(target.user_id, {})
            count, _ = own.get(column, (0, 0))
            own[column] = (count + 1, target.ts_ms)

    def recommend_many(self, requests: Sequence[RecommendRequest], k: int) -> list[list[str]]:
        size = len(self.catalogue)
        popularity = self._popularity[:size]
        base = popularity / (popularity.max() + 1.0) if size else popularity  # in [0, 1)
        scores = np.tile(base, (len(requests), 1))
        for row, request in enumerate(requests):
            own = self._own.get(request.user_id, {})
            if not own:
                continue
            columns = np.fromiter(own, dtype=np.int64, count=len(own))
            counts = np.array([c for c, _ in own.values()], dtype=np.float64)
            times = np.array([t for _, t in own.values()], dtype=np.float64)
            recency = (times - times.min() + 1) / (times.max() - times.min() + 2)  # in (0, 1)
            scores[row, columns] = 1.0 + counts + recency
        return self.catalogue.top_k(scores.astype(np.float32), requests, k)
