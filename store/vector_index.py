"""The vector-index role: upsert / remove / search / snapshot / restore by string item id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt


class VectorIndexError(ValueError):
    """Bad vectors, ids or snapshots given to an index."""


@dataclass(frozen=True, slots=True)
class Neighbours:
    """Best-first hits of one query: item ids and inner-product scores."""

    ids: list[str]
    scores: list[float]


class VectorIndex(Protocol):
    """Inner-product top-k over item vectors; concurrent searches, exclusive writes."""

    dim: int

    @property
    def size(self) -> int: ...

    @property
    def version(self) -> int: ...

    def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None: ...

    def remove(self, ids: Sequence[str]) -> int: ...

    def search(self, queries: npt.ArrayLike, k: int) -> list[Neighbours]: ...

    def snapshot(self, directory: Path) -> None: ...

    def restore(self, directory: Path) -> None: ...


def as_matrix(vectors: npt.ArrayLike, dim: int) -> npt.NDArray[np.float32]:
    """Coerce to a C-contiguous float32 [n, dim] matrix, or raise `VectorIndexError`."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise VectorIndexError(f"expected vectors of shape [n, {dim}], got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise VectorIndexError("vectors must be finite (no NaN or inf)")
    return matrix
