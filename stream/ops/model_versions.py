"""`recstream model versions` and `recstream model rollback V`: the model versions kept on
disk, and going back to one. A rollback is a request the running trainer takes within a
second: it resumes from V's checkpoint (its model, ranking and stream position, so the events
after V are learned again) and publishes V's state at once as a new version, so versions only
grow and every replica serves V's model within seconds."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from stream.config import Settings
from stream.errors import StreamError
from stream.wiring import (
    NamespaceWatch,
    checkpoint_store,
    redis_client,
    redis_keys,
    vector_state,
)


class RollbackError(StreamError):
    """The rollback cannot be asked for, or no trainer took it in time."""


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One version on disk, and what Redis recorded of its publication."""

    version: int
    saved: str
    events_learned: object
    current: bool
    served: bool

    def render(self) -> str:
        marks = " ".join(m for m, on in (("current", self.current), ("served", self.served)) if on)
        return f"{self.version:>8}  {self.saved}  {self.events_learned!s:>14}  {marks}"


async def _serving(settings: Settings) -> Settings:
    client = redis_client(settings)
    try:
        watch = NamespaceWatch(settings, client)
        return watch.settings_of(await watch.current())
    finally:
        await client.aclose()


def list_versions(settings: Settings) -> list[VersionRow]:
    """The serving namespace's versions on disk, oldest first."""
    return asyncio.run(_list(settings))


async def _list(settings: Settings) -> list[VersionRow]:
    settings = await _serving(settings)
    checkpoints = checkpoint_store(settings)
    client = redis_client(settings)
    try:
        state = vector_state(settings, client)
        served, current = await state.model_version(), checkpoints.current()
        rows = []
        for version in checkpoints.versions():
            saved = checkpoints.saved_at(version)
            info = await state.model_info(version)
            rows.append(
                VersionRow(
                    version,
                    datetime.fromtimestamp(saved, UTC).isoformat(timespec="seconds"),
                    info.get("events_learned", "?"),
                    version == current,
                    version == served,
                )
            )
        return rows
    finally:
        await client.aclose()


def request_rollback(settings: Settings, version: int, wait_s: float = 30.0) -> int:
    """Ask the trainer to go back to `version`; returns the new version that serves its
    model once published, or raises `RollbackError` (not on disk, or no trainer in time:
    the request then stays, and a trainer takes it when it starts)."""
    return asyncio.run(_rollback(settings, version, wait_s))


async def _rollback(settings: Settings, version: int, wait_s: float) -> int:
    settings = await _serving(settings)
    checkpoints = checkpoint_store(settings)
    if version not in checkpoints.versions():
        kept = ", ".join(map(str, checkpoints.versions())) or "none"
        raise RollbackError(f"version {version} is not on disk (kept: {kept})")
    client = redis_client(settings)
    try:
        state = vector_state(settings, client)
        before = await state.model_version() or 0
        await client.set(redis_keys(settings).control.trainer_rollback, version)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            served = await state.model_version() or 0
            for published in range(before + 1, served + 1):  # ours may be followed at once
                info = await state.model_info(published)
                if info.get("rolled_back_from") == version:
                    return published
            before = max(before, served)
            await asyncio.sleep(0.2)
        raise RollbackError(
            f"no trainer took the rollback to version {version} within {wait_s:.0f}s; the "
            "request stays in Redis and the trainer takes it when it starts"
        )
    finally:
        await client.aclose()
