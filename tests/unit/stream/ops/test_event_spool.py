"""The rebuild's spool: bounded memory, and exactly the in-memory event order back."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from model.interaction import EventEffect, Interaction
from stream.events.handlers import DeadLetter, Decoded, SourcePosition, in_event_order
from stream.ops import event_spool
from stream.ops.event_spool import EventSpool


def _records(n: int, seed: int) -> Decoded:
    rng = random.Random(seed)
    out: Decoded = []
    offsets = [0, 0, 0]
    for number in range(n):
        partition = rng.randrange(3)
        position = SourcePosition("clicks", partition, offsets[partition])
        offsets[partition] += 1
        if number % 97 == 0:
            out.append((position, DeadLetter("bad", position, None, b"x")))
            continue
        ts = 1_000 + rng.randrange(500)  # partitions are not in time order themselves
        effect = EventEffect(f"e{number}", "u", (Interaction("u", f"i{number}", "click", ts),))
        out.append((position, effect))
    return out


def test_records_come_back_in_the_in_memory_event_order_while_few_are_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_spool, "FLUSH_EVERY", 50)  # a small buffer for the test
    records = _records(2_000, seed=3)
    held = []
    with EventSpool(tmp_path) as spool:
        for start in range(0, len(records), 100):
            spool.extend(records[start : start + 100])
            held.append(spool.buffered)
        first = list(spool.in_event_order())
        again = list(spool.in_event_order())  # readable more than once
    assert max(held) <= 3 * 50
    assert first == list(in_event_order(records))
    assert again == first
    assert list(tmp_path.iterdir()) == []  # its files are gone
