"""Behaviour events on the wire: pydantic models, decoding with human-readable rejection reasons.

JSON on the wire; the Kafka message key is the `user_id`, so a user's events stay ordered.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from stream.errors import StreamError

SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
MAX_CONTEXT_BYTES = 2048
# Event times outside [2000-01-01, 2100-01-01) are almost surely unit mistakes (seconds vs ms).
_MIN_TS_MS = 946_684_800_000
_MAX_TS_MS = 4_102_444_800_000

Id = Annotated[str, Field(min_length=1, max_length=128)]


class EventError(StreamError, ValueError):
    """An event was rejected; `reason` says what to fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EventContext(BaseModel):
    """Where the interaction happened; small and bounded."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    page: Annotated[str, Field(max_length=256)] | None = None
    position: Annotated[int, Field(ge=0, le=100_000)] | None = None
    query: Annotated[str, Field(max_length=512)] | None = None


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    event_id: Id
    user_id: Id
    ts: datetime
    schema_version: int = 1
    session_id: Id | None = None
    context: EventContext | None = None

    @field_validator("ts", mode="before")
    @classmethod
    def _event_time(cls, value: Any) -> datetime:
        return parse_event_time(value)

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value not in SUPPORTED_SCHEMA_VERSIONS:
            known = ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
            raise ValueError(
                f"unsupported schema_version {value}; this version understands {known}"
            )
        return value

    @property
    def ts_ms(self) -> int:
        """Event time as epoch milliseconds."""
        return int(self.ts.timestamp() * 1000)

    def to_json(self) -> bytes:
        """Wire form: compact JSON with the event time as RFC 3339 UTC."""
        return self.model_dump_json(exclude_none=True).encode()


class ClickEvent(_EventBase):
    """A user clicked (viewed) an item."""

    type: Literal["click"] = "click"
    item_id: Id


class OrderLine(BaseModel):
    """One item of an order."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    item_id: Id
    quantity: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    price: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0

    @field_validator("price", mode="before")
    @classmethod
    def _int_price(cls, value: Any) -> Any:
        # JSON has one number type: a whole price such as 10 is as valid as 10.0.
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


class OrderEvent(_EventBase):
    """A user ordered one or more items."""

    type: Literal["order"] = "order"
    order_id: Id
    items: Annotated[list[OrderLine], Field(min_length=1, max_length=500)]


Event = Annotated[ClickEvent | OrderEvent, Field(discriminator="type")]
EVENT_TYPES: dict[str, type[ClickEvent] | type[OrderEvent]] = {
    "click": ClickEvent,
    "order": OrderEvent,
}
_event_adapter: TypeAdapter[ClickEvent | OrderEvent] = TypeAdapter(Event)


def parse_event_time(value: Any) -> datetime:
    """RFC 3339 string (with an offset) or epoch milliseconds -> aware UTC datetime, between
    2000 and 2100 whichever way it is written."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("ts must carry a UTC offset")
        return _in_range(value)
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or epoch milliseconds, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("ts must be a finite number of epoch milliseconds")
        if not _MIN_TS_MS <= value < _MAX_TS_MS:
            raise ValueError(
                f"ts {value} is not epoch milliseconds between 2000 and 2100 (seconds given?)"
            )
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, str):
        if len(value) > 64:
            raise ValueError("ts string is too long for an RFC 3339 time")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"ts {value!r} is not an RFC 3339 time") from None
        if parsed.tzinfo is None:
            raise ValueError(f"ts {value!r} needs a UTC offset, e.g. 'Z' or '+02:00'")
        return _in_range(parsed)
    raise ValueError("ts must be an RFC 3339 string or epoch milliseconds")


def _in_range(moment: datetime) -> datetime:
    """`moment` in UTC when it lies between 2000 and 2100; a time at the calendar's edge
    (year 9999 with a negative offset) overflows in the conversion: also a ValueError."""
    try:
        utc = moment.astimezone(UTC)
        ms = utc.timestamp() * 1000
    except (OverflowError, ValueError, OSError):
        raise ValueError(f"ts {moment.isoformat()} is not a time between 2000 and 2100") from None
    if not _MIN_TS_MS <= ms < _MAX_TS_MS:
        raise ValueError(f"ts {moment.isoformat()} is not a time between 2000 and 2100")
    return utc


def _describe(error: ValidationError) -> str:
    """One line per problem, e.g. `items.0.quantity: Input should be >= 1`."""
    parts: list[str] = []
    for item in error.errors(include_url=False):
        loc = ".".join(str(p) for p in item["loc"][1:])
        if item["type"] == "union_tag_invalid":
            tag = item.get("ctx", {}).get("tag", "?")
            parts.append(f"type: unknown event type {tag!r} (expected one of: click, order)")
            continue
        if item["type"] == "union_tag_not_found":
            parts.append("type: missing (expected one of: click, order)")
            continue
        if item["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown field")
            continue
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts[:10]) + (f"; and {len(parts) - 10} more" if len(parts) > 10 else "")


def validate_event(document: Any) -> ClickEvent | OrderEvent:
    """A decoded JSON document -> event, or EventError with a reason a human can act on."""
    if not isinstance(document, dict):
        raise EventError(f"an event must be a JSON object, got {type(document).__name__}")
    context = document.get("context")
    if context is not None and len(json.dumps(context, default=str)) > MAX_CONTEXT_BYTES:
        raise EventError(f"context: larger than {MAX_CONTEXT_BYTES} bytes")
    try:
        return _event_adapter.validate_python(document)
    except ValidationError as error:
        raise EventError(_describe(error)) from None


def decode_event(payload: bytes, max_bytes: int) -> ClickEvent | OrderEvent:
    """Wire bytes -> event, or EventError. Never raises anything else.

    Parsing and validating in one step (pydantic's own JSON parser) takes a third of the time
    of `json.loads` and then validating; what it refuses, and any event with a context (whose
    size is checked on the document), goes the reference way below, which gives the reason.
    """
    if len(payload) > max_bytes:
        raise EventError(f"payload of {len(payload)} bytes exceeds the {max_bytes}-byte limit")
    try:
        event = _event_adapter.validate_json(payload)
    except Exception:  # the reference decode below says what is wrong
        pass
    else:
        if event.context is None:
            return event
    return _decode_reference(payload)


MAX_NESTING = 32  # an event nests 4 deep; deeper is refused before parsing
_JSON_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN, _CLOSE = np.frombuffer(b"[{", dtype=np.uint8), np.frombuffer(b"]}", dtype=np.uint8)


def _too_deep(payload: bytes) -> bool:
    """Whether `payload` opens more than MAX_NESTING arrays/objects at once (strings aside).
    Checked before parsing so that the answer never depends on how deep the caller's stack
    is (the parser's own limit does: the same payload passed one decode and failed another)."""
    if payload.count(b"[") + payload.count(b"{") <= MAX_NESTING:
        return False
    codes = np.frombuffer(_JSON_STRINGS.sub(b"", payload), dtype=np.uint8)
    steps = np.isin(codes, _OPEN).astype(np.int32) - np.isin(codes, _CLOSE).astype(np.int32)
    return bool(steps.size) and int(np.cumsum(steps).max()) > MAX_NESTING


def _decode_reference(payload: bytes) -> ClickEvent | OrderEvent:
    """`json.loads`, then `validate_event`: the decode whose outcome defines the schema."""
    if _too_deep(payload):
        raise EventError("payload is nested too deeply")
    try:
        document = json.loads(payload)
    except RecursionError:
        raise EventError("payload is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise EventError(f"payload is not valid UTF-8 JSON: {error}") from None
    try:
        return validate_event(document)
    except RecursionError:
        raise EventError("payload is nested too deeply") from None


def json_schemas() -> dict[str, dict[str, Any]]:
    """A JSON Schema per event type, for producers in other languages."""
    return {name: model.model_json_schema() for name, model in EVENT_TYPES.items()}
