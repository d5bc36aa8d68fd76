"""Recent model versions loaded from checkpoints, to embed users with a given version."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from model.checkpoints import CheckpointError, CheckpointStore
from model.interaction import Interaction
from model.two_tower import TwoTowerRecommender


class ServingModels:
    """Keeps the last `keep` model versions in memory (CPU, eval mode); thread-safe.

    Serving processes (ingest workers, API replicas) use it so that a user vector is made by
    exactly the model version whose item vectors it will be scored against.
    """

    def __init__(self, checkpoints: CheckpointStore, keep: int = 2) -> None:
        self.checkpoints = checkpoints
        self.keep = keep
        self._models: OrderedDict[int, TwoTowerRecommender] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def loaded(self) -> list[int]:
        """Versions in memory, oldest first."""
        with self._lock:
            return list(self._models)

    def get(self, version: int) -> TwoTowerRecommender | None:
        """The model of `version`, loading it on first use; None when it is not on disk."""
        with self._lock:
            model = self._models.get(version)
            if model is None:
                try:
                    model = self.checkpoints.load_model(version)
                except CheckpointError:
                    return None
                self._models[version] = model
                while len(self._models) > self.keep:
                    self._models.popitem(last=False)
            return model

    def embed(
        self,
        version: int,
        histories: Sequence[Sequence[Interaction]],
        now_ms: Sequence[int],
    ) -> npt.NDArray[np.float32] | None:
        """User vectors [B, dim] of `version` from oldest-first histories, or None."""
        model = self.get(version)
        if model is None:
            return None
        vectors = model.embed_users(histories, list(now_ms))
        return np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)
