"""A replica's prepared user vectors: which users, and when one may serve a request."""

from __future__ import annotations

import numpy as np

from store.prepared_users import PreparedUsers, PreparedVector


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _vector(version: int, as_of: str) -> PreparedVector:
    return PreparedVector(np.ones(4, dtype=np.float32), version, as_of)


def test_recent_users_are_those_asking_within_the_window_newest_first() -> None:
    clock = Clock()
    users = PreparedUsers(most=10, window_s=30.0, clock=clock)
    for n, user in enumerate(["a", "b", "c"]):
        clock.now = n * 20.0
        users.requested(user)
    users.requested("a")  # a asks again at 40 s: most recent now
    assert users.recent() == ["a", "c", "b"]
    clock.now = 65.0
    assert users.recent() == ["a", "c"]
    clock.now = 71.0
    assert users.recent() == []


def test_at_most_the_newest_users_are_kept() -> None:
    users = PreparedUsers(most=2, window_s=30.0, clock=Clock())
    for user in ["a", "b", "c"]:
        users.requested(user)
        users.put(user, _vector(1, "e"))
    assert users.recent() == ["c", "b"]
    assert users.get("a", 1, "e") is None


def test_a_vector_serves_only_its_version_and_the_history_it_was_made_from() -> None:
    users = PreparedUsers(clock=Clock())
    users.requested("u")
    users.put("u", _vector(7, "e2"))
    assert users.get("u", 7, "e2") is not None
    assert users.get("u", 8, "e2") is None  # the index moved on to another version
    assert users.get("u", 7, "e3") is None  # the user has a newer event since
    assert (users.prepared, users.on_request) == (1, 0)


def test_vectors_of_users_who_never_asked_are_not_kept() -> None:
    users = PreparedUsers(clock=Clock())
    users.put("stranger", _vector(1, "e"), on_request=True)
    assert users.get("stranger", 1, "e") is None
    assert users.on_request == 1


def test_the_served_versions_vector_stays_while_the_next_one_is_prepared() -> None:
    users = PreparedUsers(clock=Clock())
    users.requested("u")
    users.put("u", _vector(16, "e"), on_request=True)
    users.put("u", _vector(17, "e"))  # prepared before the switch to 17
    assert users.get("u", 16, "e") is not None  # requests until the switch
    assert users.get("u", 17, "e") is not None
    users.put("u", _vector(18, "e"))
    assert users.get("u", 16, "e") is None  # two versions are kept
    assert users.get("u", 18, "e") is not None


def test_only_users_asking_again_within_the_window_are_prepared_for() -> None:
    """A user who asks once is not worth a forward pass per version; one who comes back
    within the window is, until a request comes after a longer pause."""
    clock = Clock()
    users = PreparedUsers(most=10, window_s=30.0, clock=clock)
    users.requested("once")
    users.requested("again")
    clock.now = 10.0
    users.requested("late")
    clock.now = 20.0
    users.requested("again")
    clock.now = 45.0
    users.requested("late")  # 35 s after their first request: a new visit
    assert users.recent(returning=True) == ["again"]
    assert users.recent() == ["late", "again"]


def test_a_prepared_user_who_still_waits_for_a_forward_pass_is_a_miss() -> None:
    clock = Clock()
    users = PreparedUsers(clock=clock)
    users.requested("u")
    users.put("u", _vector(1, "e1"), on_request=True)  # their first request: not a miss
    clock.now = 5.0
    users.requested("u")
    users.put("u", _vector(2, "e1"))  # prepared before the switch to 2
    clock.now = 10.0
    users.requested("u")
    users.put("u", _vector(2, "e2"), on_request=True)  # an event not yet re-embedded
    assert (users.prepared, users.on_request, users.missed) == (1, 2, 1)
    clock.now = 100.0
    users.requested("u")  # a new visit: not prepared for until they come back
    users.put("u", _vector(3, "e2"), on_request=True)
    assert users.missed == 1
