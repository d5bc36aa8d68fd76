"""Keyed pseudonyms of user ids: stable, keyed, idempotent, applied to effects and dead letters."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from stream.events.handlers import DeadLetter, SourcePosition, handle_message
from stream.events.pseudonyms import Pseudonyms

KEY = SecretStr("a-test-key-of-32-bytes-----------")
SOURCE = SourcePosition("t", 0, 7)


def test_a_pseudonym_is_stable_keyed_and_maps_to_itself() -> None:
    ours, theirs = Pseudonyms(KEY), Pseudonyms(SecretStr("another-key-of-enough-bytes"))
    alias = ours.user("alice@example.com")
    assert alias == ours.user("alice@example.com")
    assert alias.startswith("p:")
    assert "alice" not in alias
    assert theirs.user("alice@example.com") != alias
    assert ours.user(alias) == alias
    assert ours.user("bob") != alias


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Pseudonyms(SecretStr("short"))


def test_decoded_events_and_dead_letters_hold_the_pseudonym_not_the_raw_id() -> None:
    pseudonyms = Pseudonyms(KEY)
    click = {
        "type": "click",
        "event_id": "e1",
        "user_id": "alice",
        "ts": 1767225600000,
        "item_id": "i",
    }
    effect = handle_message(json.dumps(click).encode(), b"alice", SOURCE, 65536, pseudonyms)
    assert not isinstance(effect, DeadLetter)
    assert effect.user_id == pseudonyms.user("alice")
    assert {i.user_id for i in effect.interactions} == {pseudonyms.user("alice")}

    bad = {**click, "item_id": 5}
    letter = handle_message(json.dumps(bad).encode(), b"alice", SOURCE, 65536, pseudonyms)
    assert isinstance(letter, DeadLetter)
    assert b"alice" not in letter.payload
    assert letter.key == pseudonyms.user("alice").encode()
    assert b"alice" not in letter.to_json()
