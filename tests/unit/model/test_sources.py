"""Candidate sources: co-visitation neighbours are right and bounded; popularity trends."""

from __future__ import annotations

import pytest

from model.interaction import Interaction
from model.sources import CoVisitation, ItemPopularity, SourceConfigError, top_by_score

DAY_MS = 86_400_000


def _walk(source: CoVisitation, user: str, items: list[str], start_ms: int = 0) -> None:
    history: list[Interaction] = []
    for step, item in enumerate(items):
        event = Interaction(user, item, "click", start_ms + step)
        source.learn(history, event)
        history.append(event)


def test_covisitation_links_items_seen_together_nearer_ones_more() -> None:
    """Scores are cosine-normalised by both ends' mass, as item-kNN's are."""
    source = CoVisitation(window=3, cap=10)
    for n in range(5):
        _walk(source, f"u{n}", ["a", "b", "c"])
    _walk(source, "x", ["a", "z"])
    scores = source.scores(["a"])
    assert top_by_score(scores, 3) == ["b", "c", "z"]  # b next to a in five walks
    assert source.scores(["never-seen"]) == {}


def test_a_row_keeps_at_most_twice_its_cap_and_its_heaviest_neighbours() -> None:
    source = CoVisitation(window=1, cap=3)
    for n in range(50):
        _walk(source, f"u{n}", ["hub", f"spoke{n}"])
    for _ in range(10):
        _walk(source, "fan", ["hub", "favourite"])
    assert len(source.rows["hub"]) < 2 * 3
    assert "favourite" in source.rows["hub"]
    assert source.entries() <= 2 * 3 * len(source.rows)


def test_older_links_fade_with_the_half_life() -> None:
    source = CoVisitation(window=1, cap=10, half_life_ms=DAY_MS)
    _walk(source, "u1", ["a", "old"], start_ms=0)
    _walk(source, "u2", ["a", "new"], start_ms=3 * DAY_MS)
    row = source.rows["a"]
    assert row["new"] == pytest.approx(8 * row["old"], rel=1e-6)  # three half-lives later
    scores = source.scores(["a"])
    assert scores["new"] > scores["old"]


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(SourceConfigError):
        CoVisitation(cap=0)


def test_popularity_counts_all_time_and_trending() -> None:
    popularity = ItemPopularity(half_life_ms=DAY_MS)
    for _ in range(5):
        popularity.add("classic", 0)
    for _ in range(2):
        popularity.add("hit", 10 * DAY_MS)
    assert popularity.top(2) == ["classic", "hit"]
    assert popularity.top(2, trending=True) == ["hit", "classic"]
    assert popularity.first_ms[popularity.catalogue.column["hit"]] == 10 * DAY_MS


def test_the_popularity_peaks_follow_every_add_and_load() -> None:
    """The peaks scale the popularity features; they are kept between adds, so a kept value
    that an add or a load does not replace would scale every later request wrongly."""
    popularity = ItemPopularity(half_life_ms=DAY_MS)
    assert popularity.peak() == 0.0 == popularity.peak(trending=True)
    for n, item in enumerate(["a", "b", "b", "c", "b", "a", "a", "a"]):
        popularity.add(item, n * 400 * DAY_MS)  # far apart: the trending weights rescale
        for trending in (False, True):
            assert popularity.peak(trending) == popularity.scores(trending).max()
    loaded = ItemPopularity(half_life_ms=DAY_MS)
    loaded.add("z", 0)
    assert loaded.peak() == 1.0
    loaded.load_state_dict(popularity.state_dict())
    assert loaded.peak() == 4.0
    assert loaded.peak(trending=True) == popularity.peak(trending=True)


def test_covisitation_grows_past_its_first_arrays_and_scores_as_the_rows_say() -> None:
    source = CoVisitation(window=1, cap=5_000)
    for n in range(3_000):  # each event links an item never linked before to the hub
        source.learn([Interaction("u", f"i{n}", "click", n)], Interaction("u", "hub", "click", n))
    scores = source.scores(["i1500"])
    assert set(scores) == {"hub"}
    assert len(source.scores(["hub"])) == 3_000


def test_a_loaded_covisitation_scores_and_keeps_learning_as_the_original() -> None:
    """Replicas load the state at every version (they only score); a restarted trainer
    loads it and learns on: both must behave as the state they loaded, scaling included."""
    original = CoVisitation(window=3, cap=4, half_life_ms=DAY_MS)
    for user in range(30):
        _walk(original, f"u{user}", [f"i{(user * 7 + n) % 23}" for n in range(6)], user * DAY_MS)
    loaded = CoVisitation()
    loaded.load_state_dict(original.state_dict())
    recent = ["i3", "i5", "i8"]
    assert loaded.scores(recent) == pytest.approx(original.scores(recent))
    assert loaded.entries() == original.entries()
    for source in (original, loaded):  # more learning, far enough on to rescale the weights
        _walk(source, "late", ["i1", "i3", "i22", "i5"], 400 * DAY_MS)
    assert loaded.scores(recent) == pytest.approx(original.scores(recent))
    assert loaded.entries() == original.entries()  # rows learned since the load and as loaded
    rows, expected = loaded.neighbour_rows(), original.neighbour_rows()
    assert rows.keys() == expected.keys()
    for item, row in rows.items():
        assert row == pytest.approx(expected[item])
    again = CoVisitation()
    again.load_state_dict(loaded.state_dict())
    assert again.scores(["i22"]) == pytest.approx(original.scores(["i22"]))
    assert again.entries() == original.entries()
