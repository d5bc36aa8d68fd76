"""Load shared by the benchmarks: synthetic events produced at a fixed rate through the SDK."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.samples import sample_events


def produce_at(
    settings: Settings,
    rate: float,
    seconds: float,
    shape: tuple[int, int],
    stop_at: threading.Event,
    seed: int = 7,
) -> int:
    """Send synthetic events of `shape` (users, items) at `rate`/s for `seconds` or until
    `stop_at`, stamped with the time they are sent (as live ingest); returns how many."""
    users, items = shape
    events = sample_events(int(rate * seconds) + 1, users=users, items=items, seed=seed)
    sent = 0
    began = time.monotonic()
    with EventProducer(settings) as producer:
        for event in events:
            if stop_at.is_set():
                break
            delay = began + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.send(event.model_copy(update={"ts": datetime.now(UTC)}))
            sent += 1
        producer.flush()
    return sent
