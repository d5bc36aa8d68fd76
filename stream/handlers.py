"""Pure ingest handlers: wire bytes -> effect to apply, or a dead-letter record with the reason.

Shared by the live agents and (later) replay, so both treat every message the same way.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

from model.interaction import Interaction
from store.interaction_store import EventEffect
from stream.events import ClickEvent, EventError, OrderEvent, decode_event
from stream.pseudonyms import Pseudonyms


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a message came from."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be applied, with the reason and its origin."""

    reason: str
    source: SourcePosition
    key: bytes | None
    payload: bytes

    def to_json(self) -> bytes:
        """Dead-letter value: original bytes (base64, and as text if UTF-8), reason, origin."""
        try:
            text: str | None = self.payload.decode()
        except UnicodeDecodeError:
            text = None
        record = {
            "reason": self.reason,
            "topic": self.source.topic,
            "partition": self.source.partition,
            "offset": self.source.offset,
            "key": self.key.decode(errors="replace") if self.key is not None else None,
            "payload_b64": base64.b64encode(self.payload).decode(),
            "payload": text,
            "dead_lettered_at_ms": int(time.time() * 1000),
        }
        return json.dumps(record, separators=(",", ":")).encode()


def effect_of(event: ClickEvent | OrderEvent) -> EventEffect:
    """The interactions an event contributes to user and item state."""
    ts = event.ts_ms
    if isinstance(event, ClickEvent):
        interactions: tuple[Interaction, ...] = (
            Interaction(event.user_id, event.item_id, "click", ts),
        )
    else:
        interactions = tuple(
            Interaction(event.user_id, line.item_id, "order", ts, line.quantity)
            for line in event.items
        )
    return EventEffect(event.event_id, event.user_id, interactions)


def handle_message(
    payload: bytes | None,
    key: bytes | None,
    source: SourcePosition,
    max_bytes: int,
    pseudonyms: Pseudonyms | None = None,
) -> EventEffect | DeadLetter:
    """Decode and validate one message; never raises for bad input. With `pseudonyms`, the
    effect and the dead letter hold the user's pseudonym, never the raw id."""
    if payload is None:
        return DeadLetter("message has no value", source, key, b"")
    try:
        event = decode_event(payload, max_bytes)
    except EventError as error:
        if pseudonyms is not None:
            payload, key = pseudonyms.redact(payload, key)
        return DeadLetter(error.reason, source, key, payload)
    if pseudonyms is not None:
        event = event.model_copy(update={"user_id": pseudonyms.user(event.user_id)})
    return effect_of(event)
