"""History entries are sorted-set members: the same (event, line) must give the same bytes."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from model.interaction import Interaction
from store.interaction_store import HistoryEntry, history_entries, history_member

ids = st.text(max_size=20) | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126))


@given(
    event_id=ids,
    item_id=ids,
    line=st.integers(0, 1_000),
    kind=st.sampled_from(["click", "order"]),
    ts_ms=st.integers(0, 2**53),
)
def test_a_history_member_is_the_compact_json_of_its_entry_whatever_the_ids(
    event_id: str, item_id: str, line: int, kind: str, ts_ms: int
) -> None:
    entry = {"event_id": event_id, "n": f"{line:03d}", "item_id": item_id, "kind": kind}
    expected = json.dumps(entry | {"ts_ms": ts_ms}, separators=(",", ":"))
    member = history_member(event_id, line, Interaction("u", item_id, kind, ts_ms))  # type: ignore[arg-type]
    assert member == expected


@given(
    members=st.lists(
        st.tuples(
            ids,
            ids,
            st.integers(0, 999),
            st.sampled_from(["click", "order"]),
            st.integers(0, 2**53),
        ),
        max_size=5,
    )
)
def test_history_members_read_back_as_the_entries_they_were_made_from(
    members: list[tuple[str, str, int, str, int]],
) -> None:
    raw = [
        history_member(e, n, Interaction("u", i, k, t)).encode()  # type: ignore[arg-type]
        for e, i, n, k, t in members
    ]
    assert history_entries(raw) == [HistoryEntry(i, k, t, e) for e, i, _, k, t in members]


def test_entries_older_versions_wrote_read_back_too() -> None:
    """Spaced JSON without an event id, and a time kept as text."""
    raw: list[bytes | str] = [
        '{"item_id": "a", "kind": "click", "ts_ms": 1000}',
        b'{"item_id":"b","kind":"order","ts_ms":"2000"}',
    ]
    assert history_entries(raw) == [
        HistoryEntry("a", "click", 1_000),
        HistoryEntry("b", "order", 2_000),
    ]
