"""The online ranker learns which feature marks the chosen candidate, whichever it is."""

from __future__ import annotations

import numpy as np
import pytest

from model.ranker import OnlineRanker, RankerConfigError


def _lists(signal: int, seed: int, n: int = 400) -> list[tuple[np.ndarray, int]]:
    """Candidate lists of 20 rows x 4 features; the positive is the row highest on `signal`."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.random((20, 4))
        out.append((x, int(np.argmax(x[:, signal]))))
    return out


@pytest.mark.parametrize("signal", [0, 2])
def test_the_ranker_learns_a_planted_preference(signal: int) -> None:
    ranker = OnlineRanker(features=4, seed=0)
    for x, positive in _lists(signal, seed=1):
        ranker.learn(x, positive)
    hits = [int(np.argmax(ranker.scores(x)) == p) for x, p in _lists(signal, seed=2, n=200)]
    assert np.mean(hits) > 0.8


def test_the_same_seed_and_lists_give_the_same_ranker() -> None:
    runs = []
    for _ in range(2):
        ranker = OnlineRanker(features=4, seed=3)
        for x, positive in _lists(1, seed=4, n=50):
            ranker.learn(x, positive)
        runs.append(ranker.scores(np.eye(4)))
    assert np.array_equal(runs[0], runs[1])


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(RankerConfigError):
        OnlineRanker(features=0)
