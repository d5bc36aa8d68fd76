"""A replica's own user vectors: made off the request path for the users it served lately,
before its index switches to a new model version, so a request never waits on the model."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_VERSIONS_KEPT = 2  # the served version's vector and the next one's, made before the switch


@dataclass(frozen=True, slots=True)
class PreparedVector:
    """A user's vector under `model_version`, made from the history whose newest event is
    `as_of_event_id`: valid for exactly that version and that history."""

    vector: npt.NDArray[np.float32]
    model_version: int
    as_of_event_id: str


@dataclass(slots=True)
class _Followed:
    """What a replica keeps of one user who asked lately."""

    at: float  # their newest request
    returning: bool  # that request came within the window of the one before it
    prepared: bool = False  # a vector was prepared for them since they came back
    vectors: tuple[PreparedVector, ...] = ()


class PreparedUsers:
    """The users requested lately (at most `most`, newest request last) and, per user, the
    vectors this replica made for them: of the version served and of the one being prepared
    (requests meanwhile are answered with the served one). A vector serves a request only
    for its own version and while the user has no newer event, so every response still
    comes from one version and reflects the user's newest event.

    Counts how each vector was made, and the misses: requests of a user prepared for (one
    returning within the window) that still waited for a forward pass."""

    def __init__(
        self,
        most: int = 5_000,
        window_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.most = most
        self.window_s = window_s
        self._clock = clock
        self._users: OrderedDict[str, _Followed] = OrderedDict()
        self.prepared = 0  # vectors made before a switch (off the request path)
        self.on_request = 0  # vectors made while a request waited (the fallback)
        self.missed = 0  # of those, for users vectors were prepared for (the steady state)

    def requested(self, user_id: str) -> None:
        """Note a request by `user_id` (they are prepared for the next versions)."""
        now = self._clock()
        followed = self._users.pop(user_id, None)
        if followed is None:
            followed = _Followed(now, returning=False)
        else:
            followed.returning = now - followed.at <= self.window_s
            followed.prepared = followed.prepared and followed.returning
            followed.at = now
        self._users[user_id] = followed
        if len(self._users) > self.most:
            self._users.popitem(last=False)

    def recent(self, *, returning: bool = False) -> list[str]:
        """Users requested within the window, most recent first; `returning`: only those
        whose newest request came within the window of the one before (a visit of several
        requests: a user who asks once is not worth a forward pass per version)."""
        since = self._clock() - self.window_s
        found = []
        for user_id, followed in reversed(self._users.items()):
            if followed.at < since:
                break
            if followed.returning or not returning:
                found.append(user_id)
        return found

    def get(self, user_id: str, model_version: int, as_of_event_id: str) -> PreparedVector | None:
        """The user's vector of `model_version` made from the history ending at
        `as_of_event_id`, if this replica has it."""
        followed = self._users.get(user_id)
        for vector in () if followed is None else followed.vectors:
            if vector.model_version == model_version:
                return vector if vector.as_of_event_id == as_of_event_id else None
        return None

    def put(self, user_id: str, vector: PreparedVector, *, on_request: bool = False) -> None:
        """Keep a vector for a user requested lately (others are not kept)."""
        followed = self._users.get(user_id)
        if followed is not None:
            others = [v for v in followed.vectors if v.model_version != vector.model_version]
            newest = sorted([*others, vector], key=lambda v: v.model_version)[-_VERSIONS_KEPT:]
            followed.vectors = tuple(newest)
        if on_request:
            self.on_request += 1
            self.missed += followed is not None and followed.prepared
        else:
            self.prepared += 1
            if followed is not None:
                followed.prepared = True
