"""The tower's side of the ranker's training at a large catalogue: its nearest items from an
approximate index of the item vectors, of the kind the replicas serve from, instead of every
item's score for every learned event (at 1M items on the 2-core box: 351 events/s learned
with IVF1024 against 56, `python -m bench.trainer_catalogue`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from model.ranked import TowerViews, tower_views
from model.ranking import CandidateConfig, TowerView, Vector
from model.recommender import Catalogue, RecommendRequest, TwoTowerOnlineRecommender
from store.vector_index import Neighbours
from stream.config import EXACT_FACTORY, Settings
from stream.training.vector_changes import VectorChanges

if TYPE_CHECKING:
    from store.faiss_index import FaissVectorIndex

# Below this many items the exact scores of every item cost less than keeping an index (and
# are what `recstream eval` computes); an IVF index is trained from its first upsert then.
INDEXED_FROM = 50_000


class _IndexedTower:
    """One request's tower view: nearest items found in one search for the batch, scores from
    the catalogue's vectors (as exact as the matrix path's)."""

    def __init__(
        self,
        index: FaissVectorIndex,
        user: npt.NDArray[np.float32],
        found: Neighbours,
        catalogue: Catalogue,
        vectors: npt.NDArray[np.float32],
    ) -> None:
        self._index, self._user, self._found = index, user, found
        self._catalogue, self._vectors = catalogue, vectors

    def nearest(self, n: int) -> list[str]:
        if n > len(self._found.ids) and self._index.size > len(self._found.ids):
            self._found = self._index.search(self._user[None], n)[0]
        return self._found.ids[:n]

    def score(self, ids: Sequence[str]) -> tuple[Vector, npt.NDArray[np.bool_]]:
        column = self._catalogue.column
        columns = np.fromiter((column.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        known = columns >= 0
        scores = np.zeros(len(ids))
        scores[known] = self._vectors[columns[known]] @ self._user
        return scores, known


class IndexedTowerViews:
    """`TowerViews` for the trainer: exact below `indexed_from` items; above, an index built
    with `factory`, kept in step with the tower's item vectors at each of their refreshes by
    upserting the vectors that changed (the sparse optimiser moves only the rows it touched)."""

    def __init__(
        self,
        dim: int,
        factory: str,
        *,
        nearest: int,
        nprobe: int = 32,
        ef_search: int = 128,
        threads: int = 1,
        indexed_from: int = INDEXED_FROM,
    ) -> None:
        """`threads`: OpenMP threads of a search (the trainer's torch threads: it waits for
        it)."""
        from store.faiss_index import FaissVectorIndex  # here: FAISS is ~1 s of a start

        self.index = FaissVectorIndex(
            dim, factory, search_threads=threads, nprobe=nprobe, ef_search=ef_search
        )
        self.nearest, self.indexed_from = nearest, indexed_from
        self._indexed = VectorChanges(dim)
        self._synced: torch.Tensor | None = None  # the tower's vectors the index holds
        self._matrix = np.empty((0, dim), dtype=np.float32)

    def __call__(
        self, tower: TwoTowerOnlineRecommender | None, requests: Sequence[RecommendRequest]
    ) -> list[TowerView | None]:
        found = None if tower is None else tower.item_vectors()
        if tower is None or found is None or len(found[0]) < self.indexed_from:
            return tower_views(tower, requests)
        catalogue, vectors = found
        if vectors is not self._synced:
            self._sync(catalogue, vectors)
        users = tower.user_vectors(requests)
        searched = self.index.search(users, self.nearest)
        return [
            _IndexedTower(self.index, user, near, catalogue, self._matrix)
            for user, near in zip(users, searched, strict=True)
        ]

    def _sync(self, catalogue: Catalogue, vectors: torch.Tensor) -> None:
        """Upsert the vectors that changed since the last sync, remove the ids that left."""
        matrix = np.ascontiguousarray(vectors.float().cpu().numpy())
        changed, retired = self._indexed.since(catalogue.ids, matrix)
        rows = np.flatnonzero(changed)
        self.index.upsert([catalogue.ids[r] for r in rows], matrix[rows], removing=retired)
        self._indexed.remember(catalogue.ids, matrix)
        self._synced, self._matrix = vectors, matrix


def trainer_tower_views(settings: Settings) -> TowerViews:
    """How the trainer finds the tower's nearest items for the ranker's training: as the
    replicas do (`index_factory`), or exactly when they search exactly."""
    if settings.index_factory == EXACT_FACTORY:
        return tower_views
    return IndexedTowerViews(
        settings.vector_dim,
        settings.index_factory,
        nearest=CandidateConfig().tower,
        nprobe=settings.index_nprobe,
        ef_search=settings.index_ef_search,
        threads=settings.torch_threads,
    )
