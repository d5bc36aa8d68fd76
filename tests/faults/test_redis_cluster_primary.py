"""A Redis Cluster primary killed (-9) mid-stream and restarted with its data (an append-only
file, fsynced every second): the worker waits its slots out, notices the applied offsets its
shards lost with the node's last second and reads those events again; every event ends up
with exactly one effect, none dead-lettered."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.config import Settings
from stream.events.samples import sample_events
from stream.events.schema import ClickEvent, OrderEvent
from stream.local.stack import (
    RedisClusterNodes,
    restart_redis_node,
    start_redis_cluster,
    stop_redis_cluster,
)
from stream.wiring import interaction_store, redis_client
from tests.conftest import (
    Processes,
    forget,
    ingest_counts,
    isolated_settings,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def durable_cluster(tmp_path: Path) -> Iterator[list[RedisClusterNodes]]:
    """A 3-primary cluster of this test's own whose nodes keep their data; a list, so the test
    can put the cluster with a restarted node's new PID back for the teardown."""
    held = [start_redis_cluster(tmp_path / "cluster", durable=True)]
    try:
        yield held
    finally:
        stop_redis_cluster(held[0])


def _totals(settings: Settings) -> tuple[float, float]:
    """Clicks and units counted over every item, summed over the shards."""

    async def read() -> tuple[float, float]:
        client = redis_client(settings, timeout_s=2)
        try:
            store = interaction_store(settings, client)
            clicks = await store.top_items("clicks", None)
            units = await store.top_items("units", None)
            return sum(n for _, n in clicks), sum(n for _, n in units)
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_a_primary_killed_and_restarted_mid_stream_loses_nothing_and_counts_nothing_twice(
    kafka_bootstrap: str, durable_cluster: list[RedisClusterNodes], tmp_path: Path
) -> None:
    nodes = durable_cluster[0]
    settings = isolated_settings(kafka_bootstrap, nodes.url, tmp_path / "data")
    events = list(sample_events(2_000, users=400, items=300, seed=61))
    clicks = sum(1 for e in events if isinstance(e, ClickEvent))
    units = sum(line.quantity for e in events if isinstance(e, OrderEvent) for line in e.items)
    processes = Processes()
    try:
        processes.start("worker", settings)
        produce(settings, events[:1_000])
        wait_until(lambda: ingest_counts(settings).get("applied", 0) >= 300, 60, "300 applied")
        os.kill(nodes.pids[1], signal.SIGKILL)  # a primary, not the node the URL names
        produce(settings, events[1_000:])  # while a third of the slots have no primary
        time.sleep(2.0)
        durable_cluster[0] = restart_redis_node(nodes, 1)
        wait_until(lambda: ingest_counts(settings).get("applied") == 2_000, 120, "all 2,000")
        time.sleep(2.0)  # a worker that rewinds re-applies nothing more
        counts = ingest_counts(settings)
        assert counts["applied"] == 2_000
        assert counts.get("dead_lettered", 0) == 0
        assert _totals(settings) == (clicks, units)  # each event's effects exactly once
    finally:
        processes.stop_all()
        forget(settings)
