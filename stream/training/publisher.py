"""Turns the trainer's current model into a served model version."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt
import torch

from model.checkpoints import CheckpointStore
from store.vector_state import Fence, RedisVectorState
from stream.training.learner import StreamLearner
from stream.training.vector_changes import VectorChanges
from stream.wiring import retrying


@dataclass(frozen=True, slots=True)
class Published:
    """One published version: how many item vectors changed, and how long it took."""

    version: int
    changed: int
    seconds: float


class ModelPublisher:
    """Checkpoint first (model + offsets = the version's artifact, which workers and API
    replicas load to embed users), then the changed item vectors, the feed entry and the
    served version in one Redis transaction. Only vectors that differ from the last
    published ones are written, so a version costs what changed, not the catalogue (all of
    them when Redis no longer serves our last version: it restarted empty, say)."""

    def __init__(
        self,
        state: RedisVectorState,
        checkpoints: CheckpointStore,
        fence: Callable[[], Fence | None] = lambda: None,
    ) -> None:
        self.state = state
        self.checkpoints = checkpoints
        self.fence = fence  # the trainer lease's: a publish goes through only while it holds
        self._published = VectorChanges(state.dim)
        self._served: int | None = None
        # the catalogue is written into one of two tables kept from call to call (a new
        # 256 MB one at 1M items costs its page faults every time): never into the one the
        # vectors last remembered live in, which the next comparison reads
        self._tables: list[torch.Tensor | None] = [None, None]
        self._held: int | None = None  # which table that is (None: neither, a copy)

    async def resume(self, learner: StreamLearner, version: int) -> int:
        """After loading checkpoint `version`: make sure Redis serves it (a crash may have
        come between the checkpoint and its publication); returns the version served. When
        Redis serves a later version (saved without the full state, which the trainer then
        resumes from before it), the loaded state is published as a new version instead:
        versions only grow."""
        served = await retrying(self.state.model_version)
        if served is not None and served > version:
            note = {"resumed_from": version}
            return (await self.publish(learner, _now_ms(), 0.0, note, full=True)).version
        deleted = await retrying(self.state.tombstones)
        ids, vectors, table = await asyncio.to_thread(self._catalogue, learner, deleted)
        if served != version:
            info = {"learned_ms": _now_ms(), "events_learned": learner.events_learned}
            await retrying(
                partial(self.state.put_item_vectors, ids, vectors, version, info, self.fence())
            )
        self._remember(ids, vectors, table)
        self._served = version
        return version

    async def publish(
        self,
        learner: StreamLearner,
        learned_ms: int,
        loss: float,
        note: Mapping[str, object] | None = None,
        *,
        full: bool = False,
    ) -> Published:
        """A new version from the model as it is now; `learned_ms` is when its last step ended;
        `note` joins the version's info (a rollback says where it came from). It carries the
        trainer's full state when `full` or when the checkpoint store says one is due."""
        began = time.perf_counter()
        if await retrying(self.state.model_version) != self._served:
            self._published.forget()  # Redis lost (or never had) our last version: all
        deleted = await retrying(self.state.tombstones)
        ids, vectors, table, changed, retired = await asyncio.to_thread(
            self._changes, learner, deleted
        )
        version = await asyncio.to_thread(self._checkpoint, learner, full)
        info = {
            "learned_ms": learned_ms,
            "published_ms": _now_ms(),
            "events_learned": learner.events_learned,
            "loss": loss,
            "changed": int(changed.sum()),
            "retired": len(retired),
            **(note or {}),
        }
        changed_ids = [ids[row] for row in np.flatnonzero(changed)]
        await retrying(
            partial(
                self.state.put_item_vectors,
                changed_ids,
                vectors[changed],
                version,
                info,
                self.fence(),
                retired,
            )
        )
        self._remember(ids, vectors, table)
        self._served = version
        return Published(version, int(changed.sum()), time.perf_counter() - began)

    def _changes(
        self, learner: StreamLearner, deleted: set[str]
    ) -> tuple[list[str], npt.NDArray[np.float32], int | None, npt.NDArray[np.bool_], list[str]]:
        """The catalogue to publish (less `deleted`) and the table it is in, which of its
        vectors changed since the last version, and the ids that left since (expired): off
        the event loop, as at 1M items they take ~0.25 s."""
        ids, vectors, table = self._catalogue(learner, deleted)
        changed, retired = self._published.since(ids, vectors)
        return ids, vectors, table, changed, retired

    def _catalogue(
        self, learner: StreamLearner, deleted: set[str]
    ) -> tuple[list[str], npt.NDArray[np.float32], int | None]:
        """The model's item vectors less the items deleted through the API (their tombstones,
        read just before: a deleted item is never published again), and which of the kept
        tables holds them (None: a copy does)."""
        model = learner.trainer.model
        free = 0 if self._held == 1 else 1
        table = self._tables[free]
        rows = len(model.vocabulary) + len(model.vocabulary) // 8  # room to grow a while
        if table is None or table.shape[0] < len(model.vocabulary):
            table = self._tables[free] = torch.empty(rows, self.state.dim)
        ids, vectors = model.catalogue(out=table)
        matrix = np.ascontiguousarray(vectors.float().cpu().numpy())
        if any(item in model.vocabulary for item in deleted):  # not a set of 1M ids: 0.1 s
            keep = [n for n, item in enumerate(ids) if item not in deleted]
            return [ids[n] for n in keep], matrix[keep], None
        in_table = matrix.ctypes.data == table.data_ptr()  # not on a GPU's model
        return ids, matrix, free if in_table else None

    def _remember(
        self, ids: list[str], vectors: npt.NDArray[np.float32], table: int | None
    ) -> None:
        """What the next version is compared with, and the table it lives in."""
        self._published.remember(ids, vectors)
        self._held = table

    def _checkpoint(self, learner: StreamLearner, full: bool) -> int:
        """Save the version (its states are gathered here too: off the event loop); the
        learner's state (user histories, learned ids) only with the full state."""
        full = full or self.checkpoints.state_due()
        return self.checkpoints.save(
            learner.trainer,
            learner.position,
            learner.state() if full else None,
            learner.ranking.state_dict(),
            full=full,
        )


def _now_ms() -> int:
    return int(time.time() * 1000)
