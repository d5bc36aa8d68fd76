"""Versioned checkpoints on disk: monotonic versions, the last N kept, rollback by pointer."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.utils.serialization as serialization

from model.errors import ModelError
from model.trainer import OnlineTrainer, model_from_state
from model.two_tower import OverlaidEmbedding, TwoTowerRecommender

FORMAT = 1
log = logging.getLogger(__name__)
_SERVING_KEYS = ("model_config", "model", "item_vocabulary", "item_features")
# a version's ranking state (`model.ranking.Ranking.state_dict`) goes with its serving part
_NAME = re.compile(r"^checkpoint-(\d{8})\.pt$")
_SERVING_NAME = re.compile(r"^model-(\d{8})\.pt$")
_ITEMS_NAME = re.compile(r"^items-(\d{8})\.pt$")
_TABLE = "item_embedding.weight"
# a serving part carries the item rows changed since its base table up to this share of the
# table; past it (or when the table's shape changed) it writes a new base
REBASE_SHARE = 0.125


class CheckpointError(ModelError, RuntimeError):
    """A checkpoint that does not exist, or cannot be read safely."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A loaded checkpoint: its version, the stream position it covers, and the trainer."""

    version: int
    position: dict[str, int]
    created_ms: int
    trainer: OnlineTrainer
    extra: dict[str, Any]
    ranking: dict[str, Any] | None = None


class CheckpointStore:
    """Checkpoints under `directory`, `checkpoint-<version>.pt`, with a CURRENT pointer;
    every version's serving part in `model-<version>.pt`, whose item table is the base table
    in the newest `items-<version>.pt` at or before it plus the rows changed since.

    Versions only grow: saving after a rollback gets a version above every earlier one, so a
    version number never names two different states.
    """

    def __init__(
        self,
        directory: str | Path,
        keep: int = 5,
        history_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        state_every_s: float = 0.0,
    ) -> None:
        if keep < 1 or history_s < 0 or state_every_s < 0:
            raise CheckpointError(
                f"keep must be >= 1, history_s and state_every_s >= 0, got {keep}, {history_s}, "
                f"{state_every_s}"
            )
        self.directory = Path(directory)
        self.keep, self.history_s, self.clock = keep, history_s, clock
        self.state_every_s = state_every_s
        self.directory.mkdir(parents=True, exist_ok=True)
        self._base: tuple[int, torch.Tensor] | None = None  # the item table last written whole

    def _path(self, version: int) -> Path:
        return self.directory / f"checkpoint-{version:08d}.pt"

    def _model_path(self, version: int) -> Path:
        """The serving part of a version: model, vocabulary and features, no optimiser state
        and no caller state, so serving processes load it quickly at every publish."""
        return self.directory / f"model-{version:08d}.pt"

    def _items_path(self, version: int) -> Path:
        """A base item table, written whole with `version`: the serving parts of later
        versions carry only the rows changed since (a 1M-item table is 256 MB)."""
        return self.directory / f"items-{version:08d}.pt"

    def versions(self) -> list[int]:
        """Versions on disk with the full state to resume from (what `load` and `rollback`
        take), ascending."""
        return self._numbered(_NAME)

    def _serving_versions(self) -> list[int]:
        """Versions with a serving part on disk (every version saved), ascending."""
        return self._numbered(_SERVING_NAME)

    def _numbered(self, name: re.Pattern[str]) -> list[int]:
        """The version numbers of the files in the directory that `name` matches, ascending."""
        found = (name.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def state_due(self) -> bool:
        """Whether the next version should carry the full state: with every version when
        `state_every_s` is 0, else once that long after the newest one on disk was written."""
        if self.state_every_s == 0:
            return True
        for version in reversed(self.versions()):
            with contextlib.suppress(FileNotFoundError):  # pruned meanwhile: an older one
                return self.clock() - self.saved_at(version) >= self.state_every_s
        return True

    def saved_at(self, version: int) -> float:
        """When `version` was written (seconds since the epoch)."""
        return self._path(version).stat().st_mtime

    def current(self) -> int | None:
        """The version `load()` returns: the latest save, or the target of a rollback."""
        pointer = self.directory / "CURRENT"
        if pointer.exists():
            return int(pointer.read_text().strip())
        versions = self.versions()
        return versions[-1] if versions else None

    def save(
        self,
        trainer: OnlineTrainer,
        position: Mapping[str, int],
        extra: Mapping[str, Any] | None = None,
        ranking: Mapping[str, Any] | None = None,
        *,
        full: bool = True,
    ) -> int:
        """Write a new version atomically, point CURRENT at it, prune beyond `keep`.

        `extra` is the caller's own state to resume with, `ranking` the candidate sources and
        ranker that serve with the model (both plain containers and tensors). `full=False`
        writes the serving part only: the version serves, but is neither resumed from nor
        rolled back to, and CURRENT stays (the trainer's full state grows with its users:
        ~344 MB at 100,000 users x 200 entries, too much to write every second).
        """
        existing = [*self.versions(), *self._serving_versions()]
        version = max([*existing, self.current() or 0]) + 1
        payload: dict[str, Any] = {
            "format": FORMAT,
            "version": version,
            "created_ms": int(time.time() * 1000),
            "position": {str(k): int(v) for k, v in position.items()},
            "trainer": trainer.state_dict(),
            "extra": dict(extra or {}),
            "ranking": None if ranking is None else dict(ranking),
        }
        serving = {key: payload["trainer"][key] for key in _SERVING_KEYS}
        try:
            serving["model"] = {**serving["model"]}
            items = self._item_rows(version, serving["model"].pop(_TABLE))
            _save_atomic(
                {**payload, "trainer": serving, "extra": {}, "items": items},
                self._model_path(version),
            )
            if full:
                _save_atomic(payload, self._path(version))
        except (OSError, RuntimeError) as error:  # torch's zip writer raises RuntimeError
            self._model_path(version).unlink(missing_ok=True)
            raise CheckpointError(
                f"cannot write version {version} in {self.directory} (disk full?): {error}; "
                f"version {self.current()} stays current"
            ) from error
        if full:
            self._point(version)
        for old in self._prunable():
            self._path(old).unlink(missing_ok=True)
            self._model_path(old).unlink(missing_ok=True)
        full_versions = set(self.versions())
        serving_only = [v for v in self._serving_versions() if v not in full_versions]
        for old in serving_only[: -self.keep]:
            self._model_path(old).unlink(missing_ok=True)
        self._prune_bases()
        return version

    def _item_rows(self, version: int, table: torch.Tensor) -> dict[str, Any]:
        """The item table of `version` as rows changed since the base table, writing
        `table` whole as a new base when there is none yet (a new trainer process), when its
        shape changed (the catalogue grew past its capacity) or past `REBASE_SHARE`."""
        table = table.detach().cpu()
        if self._base is not None and self._base[1].shape == table.shape:
            base, written = self._base
            rows = _changed_rows(table, written)
            if len(rows) <= REBASE_SHARE * len(table):
                return {"base": base, "rows": rows, "values": table[rows]}
        self._base = None
        path = self._items_path(version)
        _save_atomic({"format": FORMAT, "version": version, "table": table}, path)
        # compared with from the file's pages (the page cache), not from a copy held here
        self._base = (version, _map_table(path))
        empty = torch.empty(0, dtype=torch.long)
        return {"base": version, "rows": empty, "values": table[empty]}

    def _prune_bases(self) -> None:
        """Delete the base tables no serving part on disk uses: a version's base is the
        newest one written at or before it."""
        serving = self._serving_versions()
        bases = self._numbered(_ITEMS_NAME)
        if not serving:
            return
        used = [b for b in bases if b <= serving[0]]
        oldest_used = used[-1] if used else serving[0]
        for base in bases:
            if base < oldest_used:
                self._items_path(base).unlink(missing_ok=True)

    def _prunable(self) -> list[int]:
        """Versions to delete: all but the newest `keep`, CURRENT, and the newest version of
        each minute of the last `history_s` seconds (what `rollback` can go back to)."""
        versions = self.versions()
        kept = set(versions[-self.keep :]) | {self.current()}
        now, per_minute = self.clock(), {}
        for version in versions:  # ascending: a minute's newest version wins
            try:
                age = now - self._path(version).stat().st_mtime
            except FileNotFoundError:
                continue
            if age <= self.history_s:
                per_minute[int(age // 60)] = version
        kept |= set(per_minute.values())
        return [v for v in versions if v not in kept]

    def load(self, version: int | None = None, device: torch.device | None = None) -> Checkpoint:
        """Load `version` with `weights_only=True` onto `device`; by default CURRENT, or when
        that cannot be read (truncated, corrupt), the newest older version that can, with an
        error logged: a trainer resumes rather than crash-looping on one bad file."""
        chosen, payload = self._read(version) if version is not None else self._read_newest()
        trainer = OnlineTrainer.from_state_dict(payload["trainer"], device or torch.device("cpu"))
        return Checkpoint(
            chosen,
            dict(payload["position"]),
            int(payload["created_ms"]),
            trainer,
            dict(payload.get("extra", {})),
            payload.get("ranking"),
        )

    def load_model(self, version: int | None = None) -> TwoTowerRecommender:
        """Only the model of `version` (no optimiser state), on the CPU in eval mode."""
        return self.load_serving(version)[0]

    def load_serving(
        self, version: int | None = None, like: TwoTowerRecommender | None = None
    ) -> tuple[TwoTowerRecommender, dict[str, Any] | None]:
        """The model of `version` (CPU, eval mode) and its ranking state (None: saved without).
        `like`: a version loaded before, whose item vocabulary this one's usually extends."""
        _, payload = self._read(version, serving=True)
        items = payload.get("items")
        if items is not None:  # the base table, mapped; the rows changed since go over it
            payload["trainer"]["model"][_TABLE] = self._base_table(int(items["base"]))
        # the model takes the mapped tensors: its item table is the file's pages, shared by
        # every process on the host that serves the version, and read only where touched
        model = model_from_state(payload["trainer"], take=True, like=like)
        if items is not None and len(items["rows"]):
            base = model.item_embedding.weight
            model.item_embedding = OverlaidEmbedding(base, items["rows"], items["values"])
        return model.eval(), payload.get("ranking")

    def _read_newest(self) -> tuple[int, dict[str, Any]]:
        current = self.current()
        try:
            return self._read(current)
        except CheckpointError as error:
            for older in reversed([v for v in self.versions() if current is None or v < current]):
                try:
                    found = self._read(older)
                except CheckpointError:
                    continue
                log.error(
                    "checkpoint version %s cannot be read (%s); falling back to version %d",
                    current,
                    error,
                    older,
                )
                return found
            raise

    def _read(self, version: int | None, serving: bool = False) -> tuple[int, dict[str, Any]]:
        chosen = self.current() if version is None else version
        if chosen is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        path = self._model_path(chosen) if serving else self._path(chosen)
        # a serving part is mapped (MAP_PRIVATE), not read: at 1M items ~12 ms, not ~180
        missing = f"checkpoint version {chosen} is not in {self.directory}"
        return chosen, _load_file(path, mmap=serving, missing=missing)

    def _base_table(self, base: int) -> torch.Tensor:
        """The base item table written with version `base`, mapped."""
        return _map_table(self._items_path(base))

    def rollback(self, version: int) -> None:
        """Make an earlier `version` CURRENT; later versions stay on disk until pruned."""
        if version not in self.versions():
            raise CheckpointError(f"cannot roll back: version {version} is not on disk")
        self._point(version)

    def _point(self, version: int) -> None:
        pointer = self.directory / "CURRENT"
        _atomically(pointer, lambda partial: partial.write_text(f"{version}\n"))


def _changed_rows(table: torch.Tensor, written: torch.Tensor) -> torch.Tensor:
    """Rows of `table` that differ from `written` bit for bit: compared as 64-bit words
    where the rows allow (half the comparisons of float32; ~0.1 s saved at 1M x 64)."""
    words = table.element_size() * table.shape[1] % 8 == 0
    if words and table.is_contiguous() and written.is_contiguous():
        table, written = table.view(torch.int64), written.view(torch.int64)
    return torch.nonzero((table != written).any(dim=1)).flatten()


def _map_table(path: Path) -> torch.Tensor:
    """The table of a base file, mapped privately (writes stay in this process)."""
    missing = f"base item table {path.name} is not on disk"
    table: torch.Tensor = _load_file(path, mmap=True, missing=missing)["table"]
    return table


def _load_file(path: Path, *, mmap: bool, missing: str) -> dict[str, Any]:
    """A file of this store, loaded with `weights_only=True` (mapped with `mmap`: files are
    only renamed into place, never written in place, and a pruned file stays mapped until
    its last user lets go); `missing` is the error when it is not there."""
    try:
        payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise CheckpointError(missing) from None
    except Exception as error:
        raise CheckpointError(f"{path}: cannot be loaded safely: {error}") from error
    if payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown format {payload.get('format')!r}")
    return payload


def _save_atomic(payload: Mapping[str, Any], path: Path) -> None:
    """`torch.save` without the zip entries' CRC-32: `torch.load` never checks it (a flipped
    byte loads), and it took ~85 ms of each 1M-item version (`_atomically` guards against
    torn files)."""
    with serialization.config.patch({"save.compute_crc32": False}):  # type: ignore[attr-defined]
        _atomically(path, lambda partial: torch.save(dict(payload), partial))


def _atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write` to a sibling file, flush it to disk, rename it over `path` and flush the
    directory: readers never see half a file, and a power loss leaves the old one or the new
    one, never an empty name."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        write(partial)
        _fsync(partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
