"""Hypothesis strategies for hostile input: event-shaped documents with wrong types, odd
unicode, huge strings, NaN and infinite numbers, deep nesting and plain garbage bytes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

odd_text = st.text(
    st.characters(codec="utf-8", exclude_categories=()), max_size=40
) | st.sampled_from(["", " ", "\u0000", "\ud7ff\ufeff", "😀" * 50, "a" * 5000, "../../etc", "p:0"])
numbers = st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
scalars = st.none() | st.booleans() | numbers | odd_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=20,
)
lines = st.fixed_dictionaries(
    {},
    optional={
        "item_id": odd_text | numbers,
        "quantity": numbers | odd_text,
        "price": numbers | odd_text,
    },
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["click", "order", "view", "CLICK", ""]) | odd_text,
        "event_id": odd_text | numbers,
        "user_id": odd_text | numbers | st.none(),
        "ts": numbers | odd_text | st.just("2026-01-01T00:00:00Z"),
        "item_id": odd_text | numbers,
        "order_id": odd_text,
        "items": st.lists(lines, max_size=5) | json_values,
        "session_id": odd_text,
        "context": json_values,
        "schema_version": numbers | odd_text,
    },
)


def encode(document: Any) -> bytes:
    """JSON as a careless producer writes it: NaN allowed, lone surrogates kept."""
    return json.dumps(document, allow_nan=True).encode("utf-8", errors="surrogatepass")


payloads = (
    st.binary(max_size=600)
    | event_like.map(encode)
    | json_values.map(encode)
    | st.integers(1, 50_000).map(lambda depth: b"[" * depth + b"]" * depth)
    | st.integers(1, 50_000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth)
    | event_like.map(lambda d: encode(d)[: len(encode(d)) // 2])
)
valid_clicks = st.fixed_dictionaries(
    {
        "type": st.just("click"),
        "event_id": st.text(min_size=1, max_size=64).filter(str.strip),
        "user_id": st.text(min_size=1, max_size=128).filter(str.strip),
        "ts": st.integers(1_000_000_000_000, 4_000_000_000_000),
        "item_id": st.text(min_size=1, max_size=64).filter(str.strip),
    }
)
