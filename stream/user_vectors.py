"""User vectors from user histories with a given model version: written by ingest workers
after each batch, prepared by API replicas for the users they served lately before they
switch versions, and made on the fly by a replica when it has neither of that version."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial

import numpy as np
import numpy.typing as npt

from model.serving_models import ServingModels
from model.two_tower import newest_ms
from store.interaction_store import HistoryEntry, RedisInteractionStore
from store.prepared_users import PreparedUsers, PreparedVector
from store.vector_state import RedisVectorState, UserVector, UserVectorUpdate

log = logging.getLogger(__name__)
# Users embedded on the event loop (32 in one model call: ~0.5-2 ms on the 2-core boxes we
# measure on); a bigger chunk goes to a thread, where its torch ops run beside the applies
# but each waits for the GIL behind the loop: inline, the soak's freshness p99 fell from
# 164-169 ms to 84-117 ms, and a backlog's chunks of hundreds of users still overlap with
# the applies.
INLINE_USERS = 32


def _oldest_first(history: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    """Redis keeps histories newest first; the user tower reads them oldest first."""
    return list(reversed(history))


class ModelUserEncoder:
    """The retriever's `UserEncoder`: embeds one user with the model of a given version."""

    def __init__(self, models: ServingModels) -> None:
        self.models = models

    def encode(
        self, model_version: int, user_id: str, history: Sequence[HistoryEntry]
    ) -> npt.NDArray[np.float32] | None:
        if not history:
            return None
        past = _oldest_first(history)
        vectors = self.models.embed(model_version, [past], [newest_ms(past, 0)])
        return None if vectors is None else vectors[0]


async def _embedded(
    interactions: RedisInteractionStore,
    models: ServingModels,
    version: int,
    user_ids: Sequence[str],
    batch: int,
) -> AsyncIterator[tuple[list[str], npt.NDArray[np.float32], list[str]]]:
    """The vectors of `user_ids` (those with a history) under `version`, `batch` users at a
    time: one history read, then one model call, so that requests and applies run between
    chunks. Yields (users, vectors, the newest event each reflects)."""
    model = await asyncio.to_thread(models.get, version)
    if model is None:
        log.warning("model version %d is not loadable; user vectors not made", version)
        return
    for start in range(0, len(user_ids), batch):
        histories = await interactions.histories(
            list(user_ids[start : start + batch]), model.config.max_history
        )
        chunk = [u for u, history in histories.items() if history]
        if not chunk:
            continue
        pasts = [_oldest_first(histories[u]) for u in chunk]
        embed = partial(models.embed, version, pasts, [newest_ms(p, 0) for p in pasts])
        vectors = embed() if len(chunk) <= INLINE_USERS else await asyncio.to_thread(embed)
        if vectors is None:
            return
        yield chunk, vectors, [histories[u][0].event_id for u in chunk]


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
        written = 0
        made = _embedded(self.interactions, self.models, version, user_ids, self.batch)
        async for chunk, vectors, as_of in made:
            now = int(time.time() * 1000)
            await self.state.put_user_vectors(
                [
                    UserVectorUpdate(u, UserVector(v, version, now, e))
                    for u, v, e in zip(chunk, vectors, as_of, strict=True)
                ]
            )
            written += len(chunk)
        return written


class UserVectorPreparer:
    """Before a replica's index switches to a version: the vectors of the users who keep
    asking it (again within the window), made with that version, so their next requests
    need no forward pass."""

    def __init__(
        self,
        interactions: RedisInteractionStore,
        models: ServingModels,
        users: PreparedUsers,
        batch: int,
    ) -> None:
        self.interactions = interactions
        self.models = models
        self.users = users
        self.batch = batch

    async def prepare(self, version: int) -> int:
        """Make the vectors of `version` for the returning users; returns how many."""
        made = 0
        recent = self.users.recent(returning=True)
        async for chunk, vectors, as_of in _embedded(
            self.interactions, self.models, version, recent, self.batch
        ):
            for user_id, vector, event_id in zip(chunk, vectors, as_of, strict=True):
                self.users.put(user_id, PreparedVector(vector, version, event_id))
            made += len(chunk)
        return made
