"""Fixtures and helpers every suite shares: the real broker and real Redis (isolated topics, key
prefix and consumer group per test), recstream child processes, polling, metrics scrapes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from store.interaction_store import IngestStats
from store.redis_keys import delete_prefixed
from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.schema import ClickEvent, OrderEvent
from stream.local.processes import spawn, stop
from stream.local.stack import (
    RedisClusterNodes,
    free_port,
    redis_reachable,
    start_broker,
    start_redis_cluster,
    stop_redis_cluster,
)
from stream.wiring import blocking_redis_client, interaction_store, redis_client


def pytest_configure(config: pytest.Config) -> None:
    """The test process starts like a recstream process: one torch thread (RECSTREAM_TORCH_THREADS'
    default), set once here, so CPU results and timings do not depend on the machine's cores."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """RECSTREAM_KAFKA_BOOTSTRAP when set (`make test` sets it), else a broker of our own."""
    configured = os.environ.get("RECSTREAM_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    port = free_port()
    pid = start_broker(port, tmp_path_factory.mktemp("broker"))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop(pid)


@pytest.fixture(scope="session")
def single_redis_url() -> str:
    """RECSTREAM_REDIS_URL when set (`make test` sets it), else Redis's default port."""
    url = os.environ.get("RECSTREAM_REDIS_URL", "redis://127.0.0.1:6379/0")
    if not redis_reachable(url):
        pytest.fail(f"integration tests need Redis at {url} (recstream stack up starts one)")
    return url


@pytest.fixture(scope="session")
def redis_url(single_redis_url: str) -> str:
    """The Redis tests use (a module runs on each kind by overriding it with `each_redis`)."""
    return single_redis_url


@pytest.fixture(scope="module", params=["redis", "cluster"])
def each_redis(request: pytest.FixtureRequest, single_redis_url: str) -> str:
    """One Redis, then a node of a 3-primary Redis Cluster: a module whose `redis_url` is
    this fixture runs every test on both, with nothing else changed."""
    if request.param == "redis":
        return single_redis_url
    nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster")
    return nodes.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A 3-primary Redis Cluster of the session's own, on free ports, stopped at the end."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("a Redis Cluster needs redis-server and redis-cli on PATH")
    nodes = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield nodes
    finally:
        stop_redis_cluster(nodes)


def isolated_settings(kafka_bootstrap: str, redis_url: str, data_dir: Path) -> Settings:
    """Settings with their own topics, consumer group and Redis key prefix."""
    tag = uuid.uuid4().hex[:10]
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        redis_prefix=f"test:{tag}:",
        topic_prefix=f"t{tag}.",
        app_id=f"test-{tag}",
        partitions=3,
        session_timeout_s=6.0,
        commit_interval_s=0.5,
        data_dir=data_dir,
        log_level="warning",
        insecure_open=True,  # tests of the keys set them (tests/integration/test_security.py)
    )


def forget(settings: Settings) -> None:
    """Delete the Redis keys of `settings` (on a cluster, from every primary)."""
    client = blocking_redis_client(settings)
    delete_prefixed(client, settings.redis_prefix)
    client.close()


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings isolated to this test."""
    made = isolated_settings(kafka_bootstrap, redis_url, tmp_path / "data")
    yield made
    forget(made)


Spawner = Callable[[], subprocess.Popen[bytes]]


class Processes:
    """recstream child processes of one test or module, logging under the data dir."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, command: str, settings: Settings) -> subprocess.Popen[bytes]:
        log = settings.data_dir / f"{command}-{len(self.started)}.log"
        process = spawn(command, settings, log)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            stop(process)


@pytest.fixture
def start_worker(settings: Settings) -> Iterator[Spawner]:
    """Starts ingest worker processes; all are stopped at teardown."""
    processes = Processes()
    yield lambda: processes.start("worker", settings)
    processes.stop_all()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` until it holds; fail the test with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")


def produce(settings: Settings, events: Sequence[ClickEvent | OrderEvent]) -> None:
    """Send `events` to their topics and wait until the broker has them all."""
    with EventProducer(settings) as producer:
        for event in events:
            producer.send(event)
        producer.flush()


def read_topic(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """The JSON values of a topic from the beginning, once at least `expected` are there."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    values: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < expected and time.monotonic() < deadline:
            values.extend(json.loads(message.value) for message in consumer)
    finally:
        consumer.close()
    return values


def scrape_metrics(port: int) -> dict[str, float]:
    """The samples a process's Prometheus endpoint exports, by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def ingest_counts(settings: Settings) -> dict[str, int]:
    """The ingest counters of `settings`' namespace: applied, duplicates, dead_lettered."""

    async def read() -> IngestStats:
        client = redis_client(settings, timeout_s=2)
        try:
            return await interaction_store(settings, client).stats()
        finally:
            await client.aclose()

    stats = asyncio.run(read())
    counts = {"applied": stats.applied, "duplicates": stats.duplicates}
    counts["dead_lettered"] = stats.dead_lettered
    return {name: count for name, count in counts.items() if count}  # as Redis keeps them
