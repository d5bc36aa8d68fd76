"""Many workers and replicas on one Redis: 3 ingest workers share 6 partitions, one is killed
mid-stream, and every event still has exactly one effect; 2 API replicas (processes of their
own) serve the same model version within seconds of each publish."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request

import pytest
import redis

from store.redis_keys import RedisKeys
from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.samples import sample_events
from stream.events.schema import ClickEvent
from stream.local.stack import free_port
from tests.conftest import Processes, ingest_counts, wait_until
from tests.faults.conftest import served_version

pytestmark = pytest.mark.integration
EVENTS = 6_000


def _served(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/model", timeout=2) as response:
            version = json.loads(response.read())["model_version"]
            return int(version) if version is not None else None
    except OSError:
        return None


def _counters(settings: Settings) -> tuple[float, float]:
    """Clicks and units counted over every item."""
    client = redis.Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.redis_prefix)
    try:
        totals = []
        for key in (keys.item_clicks, keys.item_units):
            pairs = client.zrange(key, 0, -1, withscores=True)
            totals.append(sum(float(pair[1]) for pair in pairs if isinstance(pair, tuple)))
        return totals[0], totals[1]
    finally:
        client.close()


@pytest.fixture
def scaled(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"partitions": 6, "publish_interval_s": 0.5, "vector_dim": 16}
    )


def test_three_workers_one_killed_two_replicas_every_event_once_one_version(
    scaled: Settings,
) -> None:
    events = list(sample_events(EVENTS, users=600, items=500, seed=51))
    clicks = sum(1 for e in events if isinstance(e, ClickEvent))
    units = sum(line.quantity for e in events if not isinstance(e, ClickEvent) for line in e.items)
    processes = Processes()
    ports = [free_port(), free_port()]
    try:
        workers = [processes.start("worker", scaled) for _ in range(3)]
        processes.start("trainer", scaled)
        for port in ports:
            processes.start("api", scaled.model_copy(update={"api_port": port}))
        with EventProducer(scaled) as producer:
            for event in events[:500]:
                producer.send(event)
            producer.flush()
            wait_until(lambda: ingest_counts(scaled).get("applied") == 500, 90, "500 applied")

            def send_rest() -> None:
                for event in events[500:]:
                    producer.send(event)
                    time.sleep(0.0005)  # a stream, not one burst: the kill lands mid-way
                producer.flush()

            sender = threading.Thread(target=send_rest)
            sender.start()
            wait_until(lambda: ingest_counts(scaled).get("applied", 0) >= 2_000, 90, "2,000")
            workers[0].send_signal(signal.SIGKILL)
            sender.join(timeout=120)
            assert not sender.is_alive()
        wait_until(lambda: ingest_counts(scaled).get("applied") == EVENTS, 120, "every event")
        time.sleep(2.0)  # redeliveries to the surviving workers are duplicates by now
        counts = ingest_counts(scaled)
        assert counts["applied"] == EVENTS
        assert counts.get("dead_lettered", 0) == 0
        assert _counters(scaled) == (clicks, units)  # each event's effects exactly once

        # Each publish reaches both replicas within seconds, while the trainer catches up.
        for _ in range(3):
            version = served_version(scaled)
            wait_until(
                lambda v=version: all((_served(p) or 0) >= v for p in ports),  # type: ignore[misc]
                10,
                f"both replicas to serve version {version}",
            )
        wait_until(
            lambda: len({_served(p) for p in ports} | {served_version(scaled)}) == 1,
            20,
            "both replicas on the newest version once the trainer is idle",
        )
    finally:
        processes.stop_all()
