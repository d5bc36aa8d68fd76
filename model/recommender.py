"""The online-recommender contract (`recommend_many` / `learn_many`) and the two-tower one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
import torch

from model.interaction import Interaction
from model.trainer import OnlineTrainer, StepReport, TrainingExample
from model.two_tower import TwoTowerRecommender, newest_ms


@dataclass(frozen=True, slots=True)
class RecommendRequest:
    """Top-k for `user_id` as of `now_ms`, given their `history`; never return `exclude`."""

    user_id: str
    history: tuple[Interaction, ...]
    now_ms: int
    exclude: frozenset[str] = frozenset()


SystemKind = Literal["recommender", "ablation", "baseline", "peer"]


class OnlineRecommender(Protocol):
    """Anything that recommends, then learns from what happened (test-then-train). `kind` says
    what it is in an evaluation: the recommender as served, an ablation of it, a baseline, or
    a peer trained another way."""

    name: str
    kind: SystemKind

    def recommend_many(self, requests: Sequence[RecommendRequest], k: int) -> list[list[str]]: ...

    def learn_many(self, batch: Sequence[TrainingExample]) -> None: ...


def top_k_indices(
    scores: npt.NDArray[np.float32], excluded: Sequence[Sequence[int]], k: int
) -> list[list[int]]:
    """Best-first column indices per row of `scores` [B, N], skipping each row's `excluded`."""
    scores = scores.copy()
    for row, columns in enumerate(excluded):
        scores[row, list(columns)] = -np.inf
    k = min(k, scores.shape[1])
    if k == 0:
        return [[] for _ in range(len(scores))]
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(-scores, part, axis=1).argsort(axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    return [[int(c) for c in row if np.isfinite(scores[r, c])] for r, row in enumerate(best)]


class Catalogue:
    """Dense column numbers for item ids, in order of first sighting."""

    def __init__(self, ids: Sequence[str] = ()) -> None:
        self.ids: list[str] = list(ids)
        self.column: dict[str, int] = {item: c for c, item in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, item_id: str) -> int:
        column = self.column.get(item_id)
        if column is None:
            column = self.column[item_id] = len(self.ids)
            self.ids.append(item_id)
        return column

    def excluded(self, requests: Sequence[RecommendRequest]) -> list[list[int]]:
        return [[self.column[i] for i in r.exclude if i in self.column] for r in requests]

    def top_k(
        self, scores: npt.NDArray[np.float32], requests: Sequence[RecommendRequest], k: int
    ) -> list[list[str]]:
        if not self.ids:
            return [[] for _ in requests]
        best = top_k_indices(scores, self.excluded(requests), k)
        return [[self.ids[c] for c in row] for row in best]


# Scoring every item needs every item's vector: the whole catalogue through the item tower.
# They are recomputed once the events learned since reach 1/this of the catalogue's size, so
# a trainer (which scores each batch it learns, for the ranker) pays about this many item
# vectors per event at any catalogue size; an evaluation batch of 256 still refreshes them
# every batch up to 16,384 items.
ITEMS_PER_REFRESH_EVENT = 64


class TwoTowerOnlineRecommender:
    """The deep model as an `OnlineRecommender`: inner product against every admitted item
    (their vectors as of the last refresh: see `ITEMS_PER_REFRESH_EVENT`)."""

    name = "model"
    kind: SystemKind = "recommender"

    def __init__(self, trainer: OnlineTrainer) -> None:
        self.trainer = trainer
        self.model: TwoTowerRecommender = trainer.model
        self._catalogue: tuple[Catalogue, torch.Tensor] | None = None
        self._columns: tuple[list[str], Catalogue] | None = None
        self._learned_since = 0  # events learned since the item vectors were computed
        self.last_report: StepReport | None = None

    def learn_many(self, batch: Sequence[TrainingExample]) -> None:
        self.last_report = self.trainer.learn_many(batch)
        self._learned_since += len(batch)
        catalogue = len(self.model.vocabulary)
        if self._learned_since * ITEMS_PER_REFRESH_EVENT >= catalogue:
            self._catalogue = None

    def recommend_many(self, requests: Sequence[RecommendRequest], k: int) -> list[list[str]]:
        scored = self.scores(requests)
        if scored is None:
            return [[] for _ in requests]
        catalogue, scores = scored
        return catalogue.top_k(scores, requests, k)

    def scores(
        self, requests: Sequence[RecommendRequest]
    ) -> tuple[Catalogue, npt.NDArray[np.float32]] | None:
        """Every admitted item's score for each request [B, N], None before any is admitted."""
        found = self.item_vectors()
        if found is None:
            return None
        catalogue, vectors = found
        return catalogue, (self._users(requests) @ vectors.T).float().cpu().numpy()

    def item_vectors(self) -> tuple[Catalogue, torch.Tensor] | None:
        """Every admitted item and its vector [N, dim] as of the last refresh (see
        `ITEMS_PER_REFRESH_EVENT`; the same objects until the next one), None before any."""
        if self._catalogue is None:
            ids, vectors = self.model.catalogue()
            known = self._columns
            if known is None or known[0] is not ids:  # the same ids: reuse their columns
                known = self._columns = (ids, Catalogue(ids))
            self._catalogue = (known[1], vectors)
            self._learned_since = 0
        return self._catalogue if self._catalogue[0].ids else None

    def user_vectors(self, requests: Sequence[RecommendRequest]) -> npt.NDArray[np.float32]:
        """Each request's user vector [B, dim]."""
        return self._users(requests).float().cpu().numpy()

    def _users(self, requests: Sequence[RecommendRequest]) -> torch.Tensor:
        return self.model.embed_users(
            [r.history for r in requests],
            [newest_ms(r.history, r.now_ms) for r in requests],
        )
