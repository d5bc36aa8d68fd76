"""Per-user histories in fixed arrays: bounded, least recently active out first, and a
checkpoint round trip that keeps exactly what was held."""

from __future__ import annotations

from model.history_table import HistoryTable
from model.interaction import Interaction


def _clicks(user: str, *items: str, ts: int = 0) -> list[Interaction]:
    return [Interaction(user, item, "click", ts + n) for n, item in enumerate(items)]


def test_a_new_user_past_the_cap_takes_the_least_recent_users_row_and_none_of_its_entries() -> None:
    table = HistoryTable(max_users=2, length=3)
    table.extend("a", _clicks("a", "x", "y"))
    table.extend("b", _clicks("b", "z"))
    table.extend("a", _clicks("a", "w"))
    assert table.extend("c", _clicks("c", "v")) == ()
    assert table.users == ["a", "c"]
    assert [i.item_id for i in table.get("c")] == ["v"]
    assert table.get("b") == ()


def test_kinds_quantities_and_times_survive_and_only_the_newest_length_entries_stay() -> None:
    table = HistoryTable(max_users=4, length=2)
    table.extend("u", _clicks("u", "a", "b"))
    table.extend("u", [Interaction("u", "c", "order", 99, quantity=3)])
    assert table.get("u") == (
        Interaction("u", "b", "click", 1),
        Interaction("u", "c", "order", 99, 3),
    )


def test_a_saved_table_loads_into_a_smaller_one_keeping_the_most_recent_users_and_entries() -> None:
    table = HistoryTable(max_users=10, length=4)
    for n in range(5):
        table.extend(f"u{n}", _clicks(f"u{n}", *(f"i{n}{k}" for k in range(n)), ts=n * 10))
    state = table.state_dict()
    same = HistoryTable(max_users=10, length=4)
    same.load_state_dict(state)
    assert [same.get(u) for u in same.users] == [table.get(u) for u in table.users]
    small = HistoryTable(max_users=2, length=2)
    small.load_state_dict(state)
    assert small.users == ["u3", "u4"]
    assert [i.item_id for i in small.get("u4")] == ["i42", "i43"]
    small.extend("u5", _clicks("u5", "new"))
    assert small.users == ["u4", "u5"]


def test_item_ids_that_no_held_entry_uses_are_forgotten_so_the_table_stays_bounded() -> None:
    """Every item ever seen would otherwise keep its id in memory for good: a long-running
    trainer over a changing catalogue would grow without bound."""
    table = HistoryTable(max_users=5, length=2)
    for n in range(30_000):
        user = f"u{n % 5}"
        table.extend(user, _clicks(user, f"item{n}", ts=n))
    assert table.known_items <= HistoryTable.MIN_ITEM_CODES
    assert table.users == ["u0", "u1", "u2", "u3", "u4"]
    assert [i.item_id for i in table.get("u4")] == ["item29994", "item29999"]
    again = HistoryTable(max_users=5, length=2)
    again.load_state_dict(table.state_dict())
    assert [again.get(u) for u in again.users] == [table.get(u) for u in table.users]
