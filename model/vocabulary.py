"""A collisionless, growing map from external string ids to embedding rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch

from model.errors import ModelError
from model.packed import (
    pack_bools,
    pack_ints,
    pack_strings,
    unpack_bools,
    unpack_ints,
    unpack_strings,
)

UNKNOWN_ROW = 0


class VocabularyError(ModelError, ValueError):
    """A vocabulary was built or restored with inconsistent settings or state."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What one `observe` call changed: rows to (re)initialise and the capacity to fit."""

    rows: npt.NDArray[np.int64]
    fresh_rows: list[int] = field(default_factory=list)
    capacity: int = 0


class IdVocabulary:
    """Ids get their own row after `admit_after` sightings; before that they share row 0.

    Rows of ids unseen for `expire_after_ms` are freed and handed to new ids; callers
    re-initialise every row listed in `Admission.fresh_rows`. Capacity grows in chunks of
    `chunk` rows, so an embedding table sized to `capacity` is resized rarely.

    >>> vocab = IdVocabulary(admit_after=2, chunk=4)
    >>> vocab.observe(["a", "b", "a"], ts_ms=0).rows.tolist()
    [0, 0, 1]
    >>> vocab.lookup(["a", "b", "zzz"]).tolist()
    [1, 0, 0]
    >>> vocab.capacity, len(vocab)
    (4, 1)
    """

    def __init__(
        self, *, admit_after: int = 1, expire_after_ms: int | None = None, chunk: int = 1024
    ) -> None:
        if chunk < 1:
            raise VocabularyError(f"chunk must be >= 1, got {chunk}")
        self.configure(admit_after=admit_after, expire_after_ms=expire_after_ms)
        self.chunk = chunk
        self._rows: dict[str, int] = {}
        self._ids: list[str | None] = [None]
        self._seen: list[int] | torch.Tensor = [0]  # per row; as saved until first needed
        self._pending: dict[str, tuple[int, int]] = {}
        self._free: list[int] = []
        self.capacity = chunk
        self.changes = 0  # counts admissions and expiries: the owned ids changed
        self._packed: _Packed | None = None  # the ids packed last (or restored from)

    def configure(self, *, admit_after: int, expire_after_ms: int | None) -> None:
        """Set the admission threshold and expiry (from the next `observe` / `expire` on)."""
        if admit_after < 1:
            raise VocabularyError(f"admit_after must be >= 1, got {admit_after}")
        if expire_after_ms is not None and expire_after_ms <= 0:
            raise VocabularyError(f"expire_after_ms must be positive, got {expire_after_ms}")
        self.admit_after = admit_after
        self.expire_after_ms = expire_after_ms

    def __len__(self) -> int:
        """Ids that own a row."""
        return len(self._rows)

    @property
    def rows_used(self) -> int:
        """Rows handed out so far (row 0 and currently free rows included)."""
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows

    def observe(self, ids: Sequence[str], ts_ms: int | Sequence[int]) -> Admission:
        """Count a sighting of each id at `ts_ms`, admitting ids that reach the threshold."""
        times = [ts_ms] * len(ids) if isinstance(ts_ms, int) else list(ts_ms)
        if len(times) != len(ids):
            raise VocabularyError("observe needs one timestamp per id")
        rows = np.empty(len(ids), dtype=np.int64)
        fresh: list[int] = []
        last_seen = self._last_seen
        for position, (external, ts) in enumerate(zip(ids, times, strict=True)):
            row = self._rows.get(external)
            if row is None:
                count, _ = self._pending.get(external, (0, ts))
                if count + 1 < self.admit_after:
                    self._pending[external] = (count + 1, ts)
                    rows[position] = UNKNOWN_ROW
                    continue
                self._pending.pop(external, None)
                row = self._assign(external)
                fresh.append(row)
            last_seen[row] = max(last_seen[row], ts)
            rows[position] = row
        return Admission(rows=rows, fresh_rows=fresh, capacity=self.capacity)

    def lookup(self, ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """Rows of `ids` without counting a sighting; unknown ids map to row 0."""
        get = self._rows.get
        return np.fromiter((get(i, UNKNOWN_ROW) for i in ids), dtype=np.int64)

    def id_of(self, row: int) -> str | None:
        """The id owning `row`, or None for row 0 and free rows."""
        return self._ids[row] if 0 <= row < len(self._ids) else None

    def active_rows(self) -> npt.NDArray[np.int64]:
        """Rows currently owned by an id, ascending."""
        return np.fromiter(sorted(self._rows.values()), dtype=np.int64, count=len(self._rows))

    def ids(self, rows: npt.NDArray[np.int64]) -> list[str]:
        """Ids of owned `rows` (a KeyError-free inverse of `lookup` for active rows)."""
        table = self._ids
        return [str(table[int(r)]) for r in rows]

    def expire(self, now_ms: int) -> list[str]:
        """Free the rows of ids unseen for `expire_after_ms`; returns the expired ids."""
        if self.expire_after_ms is None:
            return []
        cutoff = now_ms - self.expire_after_ms
        last_seen = self._last_seen
        gone = [i for i, row in self._rows.items() if last_seen[row] < cutoff]
        for external in gone:
            row = self._rows.pop(external)
            self._ids[row] = None
            self._free.append(row)
            self._changed_row(row)
        self._pending = {i: p for i, p in self._pending.items() if p[1] >= cutoff}
        return gone

    @property
    def _last_seen(self) -> list[int]:
        """When each row's id was last seen (ms), unpacked from the saved state on first use."""
        if isinstance(self._seen, torch.Tensor):
            self._seen = unpack_ints(self._seen)
        return self._seen

    def _assign(self, external: str) -> int:
        if self._free:
            row = self._free.pop()
            self._ids[row] = external
            self._last_seen[row] = 0
        else:
            row = len(self._ids)
            self._ids.append(external)
            self._last_seen.append(0)
            if row >= self.capacity:
                self.capacity += self.chunk
        self._rows[external] = row
        self._changed_row(row)
        return row

    def state_dict(self) -> dict[str, Any]:
        """Plain lists and ints only, so it loads under `torch.load(weights_only=True)`."""
        return {
            "admit_after": self.admit_after,
            "expire_after_ms": self.expire_after_ms,
            "chunk": self.chunk,
            "capacity": self.capacity,
            **self._packed_ids(),
            "last_seen": self._seen
            if isinstance(self._seen, torch.Tensor)
            else pack_ints(self._seen),
            "pending_ids": pack_strings(list(self._pending)),
            "pending_counts": pack_ints([c for c, _ in self._pending.values()]),
            "pending_last_ms": pack_ints([t for _, t in self._pending.values()]),
        }

    def _packed_ids(self) -> dict[str, Any]:
        """The `ids` and `owned` of `state_dict`. The last ones packed are kept, and while
        rows are only appended after them (a trainer's usual next version), only those rows
        are packed and joined on: at 1M ids, packing every row took ~0.13 s of each save."""
        kept = self._packed
        if kept is None:
            kept = _Packed(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.bool), 0)
        tail = self._ids[kept.rows :]
        if not tail:
            return {"ids": kept.ids(len(self._ids)), "owned": kept.owned}
        strings = pack_strings(["" if i is None else i for i in tail])
        if "nul_joined" not in strings:  # an id holds a NUL: every row end to end, not kept
            self._packed = None
            if kept.rows:
                strings = pack_strings(["" if i is None else i for i in self._ids])
            return {"ids": strings, "owned": pack_bools([i is not None for i in self._ids])}
        separator = [torch.zeros(1, dtype=torch.uint8)] if kept.rows else []
        joined = torch.cat([kept.joined, *separator, strings["nul_joined"]])
        owned = torch.cat([kept.owned, pack_bools([i is not None for i in tail])])
        self._packed = _Packed(joined, owned, len(self._ids))
        return {"ids": self._packed.ids(len(self._ids)), "owned": owned}

    def _changed_row(self, row: int) -> None:
        """A row's id was freed or replaced: the packed ids kept no longer hold."""
        self.changes += 1
        if self._packed is not None and row < self._packed.rows:
            self._packed = None

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Any], like: IdVocabulary | None = None
    ) -> IdVocabulary:
        """Rebuild a vocabulary saved with `state_dict`. `like`: one restored (or saved) before
        and not changed since; when this state holds the same ids plus rows appended (a trainer's
        usual next version), its id tables are copied and extended instead of rebuilt."""
        vocab = cls(
            admit_after=int(state["admit_after"]),
            expire_after_ms=state["expire_after_ms"],
            chunk=int(state["chunk"]),
        )
        last_seen = state["last_seen"]
        extended = None if like is None else like._extended(state)
        vocab._ids, vocab._rows, vocab._free = extended or _id_tables(state)
        if len(vocab._ids) != len(last_seen):
            raise VocabularyError("corrupt vocabulary state: row tables disagree")
        # a serving process never reads when each id was last seen: unpacked on first need
        vocab._seen = last_seen if isinstance(last_seen, torch.Tensor) else unpack_ints(last_seen)
        if isinstance(state["owned"], torch.Tensor) and "nul_joined" in state["ids"]:
            vocab._packed = _Packed(state["ids"]["nul_joined"], state["owned"], len(vocab._ids))
        vocab._pending = {
            i: (int(c), int(t))
            for i, c, t in zip(
                unpack_strings(state["pending_ids"]),
                unpack_ints(state["pending_counts"]),
                unpack_ints(state["pending_last_ms"]),
                strict=True,
            )
        }
        vocab.capacity = int(state["capacity"])
        if vocab.capacity < len(vocab._ids):
            raise VocabularyError("corrupt vocabulary state: capacity below row count")
        return vocab

    def _extended(
        self, state: dict[str, Any]
    ) -> tuple[list[str | None], dict[str, int], list[int]] | None:
        """Copies of this vocabulary's id tables with the rows `state` appends after them,
        when `state` holds its rows unchanged and only appends (None otherwise): at 1M ids,
        ~30 ms to copy where a rebuild took ~0.4 s. Only while its packed ids are all of
        its rows: restored (or saved) and not changed since."""
        packed = self._packed
        if packed is None or packed.rows != len(self._ids):
            return None
        kept = _rows_kept(packed, state)
        if not kept:
            return None
        owned = state["owned"][kept:].tolist()
        size = len(packed.joined)
        appended = state["ids"]["nul_joined"][size + 1 :].numpy().tobytes().decode("utf-8")
        tail = appended.split("\x00") if owned else []
        if len(tail) != len(owned):
            raise VocabularyError("corrupt vocabulary state: row tables disagree")
        table = self._ids.copy()
        rows = self._rows.copy()
        for row, (external, own) in enumerate(zip(tail, owned, strict=True), start=kept):
            table.append(external if own else None)
            if own:
                rows[external] = row
        free = [r for r in range(len(table) - 1, kept - 1, -1) if table[r] is None]
        return table, rows, [*free, *self._free]


@dataclass(frozen=True, slots=True)
class _Packed:
    """The ids of a vocabulary's first `rows` rows as `pack_strings` packs them (joined by
    NUL), and their owned flags: still its own while no row among them changes."""

    joined: torch.Tensor
    owned: torch.Tensor
    rows: int

    def ids(self, count: int) -> dict[str, torch.Tensor]:
        return {"nul_joined": self.joined, "count": torch.tensor(count)}


def _rows_kept(packed: _Packed, state: dict[str, Any]) -> int:
    """How many rows `state` shares unchanged with `packed`, when it holds those rows and
    only rows appended after them (0 when it does not)."""
    ids, owned = state["ids"], state["owned"]
    if not isinstance(ids, dict) or "nul_joined" not in ids:
        return 0
    if not isinstance(owned, torch.Tensor):
        return 0
    joined, rows = ids["nul_joined"], len(packed.owned)
    size = len(packed.joined)
    if len(owned) < rows or len(joined) < size:
        return 0
    if len(owned) == rows and len(joined) != size:  # the last id changed
        return 0
    if len(owned) > rows and int(joined[size]) != 0:  # the last old id went on growing
        return 0
    if not (torch.equal(joined[:size], packed.joined) and torch.equal(owned[:rows], packed.owned)):
        return 0
    return rows


def _id_tables(state: dict[str, Any]) -> tuple[list[str | None], dict[str, int], list[int]]:
    """The row -> id table, the id -> row map and the free rows (a stack) of a saved state."""
    owned = unpack_bools(state["owned"])
    ids = unpack_strings(state["ids"])
    if len(owned) != len(ids) or owned[UNKNOWN_ROW]:
        raise VocabularyError("corrupt vocabulary state: row tables disagree")
    # every loaded version pays this (each second, in each serving process): C loops only
    free = [] if all(owned[1:]) else [r for r in range(1, len(ids)) if not owned[r]][::-1]
    table: list[str | None] = list(ids)
    for row in (UNKNOWN_ROW, *free):
        table[row] = None
    rows = dict(zip(table, range(len(table)), strict=True))
    rows.pop(None, None)  # row 0 and the free rows
    return table, cast(dict[str, int], rows), free
