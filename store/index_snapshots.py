"""Snapshots of a replica's index with the item-feed position it reflects, for a quick start.

Building a large index from Redis takes minutes (1M items in HNSW: ~200 s on two cores). A
replica instead loads its newest snapshot and reads the feed on from the snapshot's position,
as it does after any pause; where the feed no longer holds that position (trimmed), or the
snapshot is unreadable or of another index type, it builds from Redis as before.

Each snapshot is a directory of its own; `current` is a symlink replaced atomically, so
processes sharing a directory (several API processes on one host) never read a half-written
one, whichever of them writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from store.vector_index import VectorIndex, VectorIndexError

log = logging.getLogger(__name__)
_LOCK_POLL_S = 0.2
KEPT = 2  # snapshot directories kept: the current one and the one a reader may still be reading


class IndexSnapshots:
    """Snapshots of one namespace's index under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, index: VectorIndex, position: str) -> Path:
        """Write `index` as it reflects the feed up to `position`, then make it current."""
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"snap-{time.time_ns()}-{uuid.uuid4().hex[:6]}"
        index.snapshot(target)
        (target / "feed.json").write_text(json.dumps({"position": position}))
        link = self.directory / f"current.{uuid.uuid4().hex[:6]}"
        link.symlink_to(target.name)
        os.replace(link, self.directory / "current")
        self._prune()
        return target

    @contextlib.asynccontextmanager
    async def building(self) -> AsyncIterator[None]:
        """Held by one process of this host at a time while it restores or builds its index:
        processes started together build it once, the others then restore what it saved.
        Without a usable directory (a full or read-only disk) nothing is held."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock = (self.directory / "build.lock").open("a+b")
        except OSError as error:
            log.warning("no index build lock (%s): processes may each build", error)
            yield
            return
        with lock:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(_LOCK_POLL_S)  # another process builds: then restore
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def position(self) -> str | None:
        """The feed position of the current snapshot, or None (none, or unreadable)."""
        try:
            return self._current()[1]
        except (OSError, ValueError, KeyError):
            return None

    def _current(self) -> tuple[Path, str]:
        """The current snapshot's directory and the feed position it reflects."""
        target = (self.directory / "current").resolve(strict=True)
        return target, str(json.loads((target / "feed.json").read_text())["position"])

    def load(self, index: VectorIndex) -> str | None:
        """Restore the current snapshot into `index`: the feed position it reflects, or None
        (no snapshot, or one that cannot be read into this index)."""
        current = self.directory / "current"
        try:
            target, position = self._current()
            index.restore(target)
        except (OSError, ValueError, KeyError, VectorIndexError) as error:
            if current.is_symlink():
                log.warning("index snapshot not usable (%s): building from Redis", error)
            return None
        return position

    def _prune(self) -> None:
        snapshots = sorted(self.directory.glob("snap-*"), key=lambda p: p.name)
        for old in snapshots[:-KEPT]:
            shutil.rmtree(old, ignore_errors=True)
