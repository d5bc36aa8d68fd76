"""User vectors from user histories with a given model version: written by ingest workers
after each batch, and made on the fly by API replicas when the stored one is of another
version than the items it would be scored against."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from model.interaction import Interaction
from model.serving_models import ServingModels
from model.two_tower import newest_ms
from store.interaction_store import HistoryEntry, RedisInteractionStore
from store.vector_state import RedisVectorState, UserVector, UserVectorUpdate

log = logging.getLogger(__name__)


def _oldest_first(user_id: str, history: Sequence[HistoryEntry]) -> list[Interaction]:
    """Redis keeps histories newest first; the user tower reads them oldest first."""
    return [entry.interaction(user_id) for entry in reversed(history)]


class ModelUserEncoder:
    """The retriever's `UserEncoder`: embeds one user with the model of a given version."""

    def __init__(self, models: ServingModels) -> None:
        self.models = models

    def encode(
        self, model_version: int, user_id: str, history: Sequence[HistoryEntry]
    ) -> npt.NDArray[np.float32] | None:
        if not history:
            return None
        past = _oldest_first(user_id, history)
        vectors = self.models.embed(model_version, [past], [newest_ms(past, 0)])
        return None if vectors is None else vectors[0]


class UserVectorWriter:
    """Re-embeds users whose history changed, with the served model version, into Redis."""

    def __init__(
        self,
        interactions: RedisInteractionStore,
        state: RedisVectorState,
        models: ServingModels,
        batch: int,
    ) -> None:
        self.interactions = interactions
        self.state = state
        self.models = models
        self.batch = batch

    async def refresh(self, user_ids: Sequence[str]) -> int:
        """Write the vectors of `user_ids` under the served version; returns how many."""
        version = await self.state.model_version()
        if version is None or not user_ids:
            return 0
        model = await asyncio.to_thread(self.models.get, version)
        if model is None:
            log.warning("model version %d is not loadable; user vectors not updated", version)
            return 0
        limit = model.config.max_history
        histories = await self.interactions.histories(list(user_ids), limit)
        users = [u for u in user_ids if histories[u]]
        written = 0
        for start in range(0, len(users), self.batch):
            chunk = users[start : start + self.batch]
            pasts = [_oldest_first(u, histories[u]) for u in chunk]
            vectors = await asyncio.to_thread(
                self.models.embed, version, pasts, [newest_ms(p, 0) for p in pasts]
            )
            if vectors is None:
                return written
            now = int(time.time() * 1000)
            await self.state.put_user_vectors(
                [
                    UserVectorUpdate(u, UserVector(v, version, now, histories[u][0].event_id))
                    for u, v in zip(chunk, vectors, strict=True)
                ]
            )
            written += len(chunk)
        return written
