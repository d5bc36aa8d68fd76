"""Recent model versions loaded from checkpoints, to embed users with a given version."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from model.checkpoints import CheckpointError, CheckpointStore
from model.interaction import Interacted
from model.ranking import Ranking
from model.two_tower import TwoTowerRecommender

RETRY_MISSING_S = 1.0  # a version not on disk (yet, or any more) is looked for again after this


class ServingModels:
    """Keeps the last `keep` model versions in memory (CPU, eval mode); thread-safe.

    Serving processes (ingest workers, API replicas) use it so that a user vector is made by
    exactly the model version whose item vectors it will be scored against, and ranked by the
    candidate sources and ranker published with that version.
    """

    def __init__(self, checkpoints: CheckpointStore, keep: int = 2) -> None:
        self.checkpoints = checkpoints
        self.keep = keep
        self._models: OrderedDict[int, tuple[TwoTowerRecommender, Ranking | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._missing: dict[int, float] = {}  # version -> when it was last found unloadable

    @property
    def loaded(self) -> list[int]:
        """Versions in memory, oldest first."""
        with self._lock:
            return list(self._models)

    def get(self, version: int) -> TwoTowerRecommender | None:
        """The model of `version`, loading it on first use; None when it is not on disk."""
        loaded = self._load(version)
        return None if loaded is None else loaded[0]

    def ranking(self, version: int) -> Ranking | None:
        """The ranking state published with `version`; None when it has none."""
        loaded = self._load(version)
        return None if loaded is None else loaded[1]

    def _load(self, version: int) -> tuple[TwoTowerRecommender, Ranking | None] | None:
        """The loaded version, reading it from disk first if need be: outside the lock, so
        that asking for a version in memory (a request, on the event loop) never waits for
        another being read (tens of ms, a version a second). Two threads asking for the same
        new version may both read it; the first to finish is kept."""
        with self._lock:
            loaded = self._models.get(version)
            if loaded is not None:
                return loaded
            if time.monotonic() - self._missing.get(version, -RETRY_MISSING_S) < RETRY_MISSING_S:
                return None  # not read again on every request while it is not there
            newest = next(reversed(self._models.values()), None)
        try:
            # the next version's ids are mostly the newest one's: its tables are extended
            like = None if newest is None else newest[0]
            model, state = self.checkpoints.load_serving(version, like=like)
        except CheckpointError:
            with self._lock:
                self._missing = {version: time.monotonic()}
            return None
        ranking = None if state is None else Ranking.from_state_dict(state)
        with self._lock:
            self._missing.pop(version, None)
            loaded = self._models.setdefault(version, (model, ranking))
            while len(self._models) > self.keep:
                self._models.popitem(last=False)
            return loaded

    def embed(
        self,
        version: int,
        histories: Sequence[Sequence[Interacted]],
        now_ms: Sequence[int],
    ) -> npt.NDArray[np.float32] | None:
        """User vectors [B, dim] of `version` from oldest-first histories, or None."""
        model = self.get(version)
        if model is None:
            return None
        vectors = model.embed_users(histories, list(now_ms))
        return np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)
