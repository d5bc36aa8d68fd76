"""Recent interactions of many users in fixed arrays: memory bounded by `max_users`, and a
checkpoint of a million entries is a handful of array copies instead of a million objects."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from model.interaction import INTERACTION_KINDS, Interaction, kind_code


class HistoryTable:
    """The last `length` interactions of up to `max_users` users, oldest first per user.

    When a new user would exceed `max_users`, the least recently active user's row is reused.
    Item ids are stored as codes into a table of the item ids seen, from which the ids that
    no held entry uses any more are dropped as it doubles (at least `MIN_ITEM_CODES`).

    >>> table = HistoryTable(max_users=2, length=2)
    >>> table.extend("u", [Interaction("u", "a", "click", 1), Interaction("u", "b", "click", 2)])
    ()
    >>> [i.item_id for i in table.extend("u", [Interaction("u", "c", "order", 3)])]
    ['a', 'b']
    >>> [i.item_id for i in table.get("u")]
    ['b', 'c']
    """

    MIN_ITEM_CODES = 4096

    def __init__(self, max_users: int, length: int) -> None:
        if max_users < 1 or length < 1:
            raise ValueError("max_users and length must be >= 1")
        self.max_users = max_users
        self.length = length
        self.clear()

    def clear(self) -> None:
        """Forget every user and item."""
        length = self.length
        self._rows: OrderedDict[str, int] = OrderedDict()
        self._free: list[int] = []
        self._codes: dict[str, int] = {}
        self._items: list[str] = []
        self._compact_at = self.MIN_ITEM_CODES
        shape = (0, length)
        self._item = np.zeros(shape, dtype=np.int32)
        self._ts = np.zeros(shape, dtype=np.int64)
        self._kind = np.zeros(shape, dtype=np.int8)
        self._quantity = np.zeros(shape, dtype=np.int32)
        self._count = np.zeros(0, dtype=np.int32)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def known_items(self) -> int:
        """Item ids the table holds a code for (those in use, and at most as many again)."""
        return len(self._items)

    @property
    def users(self) -> list[str]:
        """Users held, least recently active first."""
        return list(self._rows)

    def get(self, user_id: str) -> tuple[Interaction, ...]:
        """The user's kept interactions, oldest first (empty for a user not held)."""
        row = self._rows.get(user_id)
        if row is None:
            return ()
        n = int(self._count[row])
        tail = slice(self.length - n, self.length)
        items = self._item[row, tail].tolist()
        times = self._ts[row, tail].tolist()
        kinds = self._kind[row, tail].tolist()
        quantities = self._quantity[row, tail].tolist()
        return tuple(
            Interaction(user_id, self._items[i], INTERACTION_KINDS[k], t, q)
            for i, t, k, q in zip(items, times, kinds, quantities, strict=True)
        )

    def extend(self, user_id: str, interactions: Sequence[Interaction]) -> tuple[Interaction, ...]:
        """Append `interactions` to the user's history; returns the history before them."""
        past = self.get(user_id)
        row = self._row_of(user_id)
        for interaction in interactions:
            self._push(row, interaction)
        return past

    def _row_of(self, user_id: str) -> int:
        row = self._rows.get(user_id)
        if row is not None:
            self._rows.move_to_end(user_id)
            return row
        if len(self._rows) >= self.max_users:
            _, row = self._rows.popitem(last=False)
        elif self._free:
            row = self._free.pop()
        else:
            row = self._grow()
        for array in (self._item, self._ts, self._kind, self._quantity):
            array[row] = 0
        self._count[row] = 0
        self._rows[user_id] = row
        return row

    def _grow(self) -> int:
        """Add a chunk of rows (up to `max_users`); returns the first new one."""
        used = self._count.shape[0]
        added = min(max(1024, used), self.max_users - used)
        self._item, self._ts, self._kind, self._quantity = (
            np.concatenate([a, np.zeros((added, self.length), dtype=a.dtype)])
            for a in (self._item, self._ts, self._kind, self._quantity)
        )
        self._count = np.concatenate([self._count, np.zeros(added, dtype=np.int32)])
        self._free.extend(range(used + added - 1, used, -1))
        return used

    def _push(self, row: int, interaction: Interaction) -> None:
        code = self._codes.get(interaction.item_id)
        if code is None:
            if len(self._items) >= self._compact_at:
                self._compact()
            code = self._codes[interaction.item_id] = len(self._items)
            self._items.append(interaction.item_id)
        for array, value in (
            (self._item, code),
            (self._ts, interaction.ts_ms),
            (self._kind, kind_code(interaction.kind)),
            (self._quantity, interaction.quantity),
        ):
            array[row, :-1] = array[row, 1:]
            array[row, -1] = value
        self._count[row] = min(int(self._count[row]) + 1, self.length)

    def _held(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.bool_], list[int]]:
        """The held rows, their item codes, which of their entries are interactions, and the
        item codes those use (ascending)."""
        rows = np.fromiter(self._rows.values(), dtype=np.int64, count=len(self._rows))
        codes = self._item[rows]
        valid = np.arange(self.length) >= (self.length - self._count[rows])[:, None]
        in_use = np.zeros(len(self._items), dtype=np.bool_)
        in_use[codes[valid]] = True
        return rows, codes, valid, np.flatnonzero(in_use).tolist()

    def _compact(self) -> None:
        """Renumber the codes in use from 0 and forget the other item ids."""
        rows, codes, valid, used = self._held()
        renumber = np.zeros(len(self._items), dtype=np.int32)
        renumber[used] = np.arange(len(used), dtype=np.int32)
        self._item[rows] = np.where(valid, renumber[codes], 0)
        self._items = [self._items[c] for c in used]
        self._codes = {item: code for code, item in enumerate(self._items)}
        self._compact_at = max(2 * len(self._items), self.MIN_ITEM_CODES)

    def state_dict(self) -> dict[str, Any]:
        """The held rows as tensors, item codes into a sorted item list: the same histories
        give the same state (loads with `weights_only=True`)."""
        rows, codes, valid, used = self._held()
        counts = self._count[rows]
        names = sorted(self._items[c] for c in used)
        renumber = np.zeros(len(self._items), dtype=np.int32)
        position = {name: k for k, name in enumerate(names)}
        renumber[used] = [position[self._items[c]] for c in used]
        return {
            "users": list(self._rows),
            "items": names,
            "item_codes": torch.from_numpy(np.where(valid, renumber[codes], 0)),
            "ts_ms": torch.from_numpy(self._ts[rows]),
            "kinds": torch.from_numpy(self._kind[rows]),
            "quantities": torch.from_numpy(self._quantity[rows]),
            "counts": torch.from_numpy(counts),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the contents with a `state_dict()`, of any `max_users` and `length`: the
        most recently active users and the newest interactions are kept."""
        self.clear()
        users: list[str] = state["users"][-self.max_users :]
        keep, width = len(users), min(self.length, int(state["ts_ms"].shape[1]))
        for name, array in (
            ("item_codes", "_item"),
            ("ts_ms", "_ts"),
            ("kinds", "_kind"),
            ("quantities", "_quantity"),
        ):
            table = np.zeros((keep, self.length), dtype=getattr(self, array).dtype)
            if keep:
                table[:, self.length - width :] = state[name].numpy()[-keep:, -width:]
            setattr(self, array, table)
        self._count = np.minimum(state["counts"].numpy()[-keep:] if keep else [], width).astype(
            np.int32
        )
        self._items = list(state["items"])
        self._codes = {item: code for code, item in enumerate(self._items)}
        self._compact_at = max(2 * len(self._items), self.MIN_ITEM_CODES)
        self._rows = OrderedDict((user, row) for row, user in enumerate(users))
