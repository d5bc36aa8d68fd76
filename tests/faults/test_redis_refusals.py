"""Redis that answers but refuses writes (OOM under `maxmemory noeviction`; READONLY, MISCONF
and BUSY alike) is an outage the worker waits out, as it waits out a lost connection: good
events are never dead-lettered and nothing is lost. Dead letters of the apply path are
pseudonymised like every other."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from store.redis_keys import RedisKeys
from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.pseudonyms import Pseudonyms
from stream.events.samples import sample_events
from stream.events.schema import ClickEvent, OrderEvent
from stream.events.topics import TopicNames
from stream.local.stack import free_port
from tests.conftest import (
    Processes,
    ingest_counts,
    isolated_settings,
    read_topic,
    scrape_metrics,
    wait_until,
)
from tests.faults.conftest import PrivateRedis

pytestmark = pytest.mark.integration


def _settings(kafka_bootstrap: str, server: PrivateRedis, data_dir: Path) -> Settings:
    return isolated_settings(kafka_bootstrap, server.url, data_dir).model_copy(
        update={"worker_metrics_port": free_port(), "vector_dim": 32}
    )


def _send_until_applied(
    settings: Settings, producer: EventProducer, events: list[ClickEvent | OrderEvent]
) -> None:
    """Send `events` to a fresh namespace and wait until the worker has applied them all."""
    for event in events:
        producer.send(event)
    producer.flush()
    n = len(events)
    wait_until(lambda: ingest_counts(settings).get("applied") == n, 60, f"{n} applied")


def test_redis_refusing_writes_makes_the_worker_wait_and_retry_not_dead_letter(
    kafka_bootstrap: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, private_redis, tmp_path / "data")
    events = list(sample_events(400, users=60, items=100, seed=43))
    client = redis.Redis.from_url(private_redis.url)
    processes = Processes()
    try:
        worker = processes.start("worker", settings)
        with EventProducer(settings) as producer:
            _send_until_applied(settings, producer, events[:200])
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", 1)  # from now on every write is refused: OOM
            for event in events[200:]:
                producer.send(event)
            producer.flush()
            port = settings.worker_metrics_port
            wait_until(
                lambda: scrape_metrics(port).get("recstream_redis_retries_total", 0) >= 3,
                30,
                "the worker to retry the refused writes",
            )
            assert ingest_counts(settings).get("applied") == 200
            client.config_set("maxmemory", 0)
            wait_until(lambda: ingest_counts(settings).get("applied") == 400, 60, "400 applied")
        assert worker.poll() is None, "the worker exited"
        assert ingest_counts(settings).get("dead_lettered", 0) == 0
        dlq = TopicNames.from_settings(settings).dlq
        assert read_topic(settings.kafka_bootstrap, dlq, expected=1, timeout_s=3) == []
    finally:
        client.close()
        processes.stop_all()


def test_an_event_that_fails_to_apply_is_dead_lettered_under_its_pseudonym(
    kafka_bootstrap: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    key = SecretStr("a pseudonym key of enough bytes")
    settings = _settings(kafka_bootstrap, private_redis, tmp_path / "data").model_copy(
        update={"pseudonym_key": key}
    )
    events = list(sample_events(50, users=5, items=20, seed=44))
    victim = events[-1].user_id
    client = redis.Redis.from_url(private_redis.url)
    processes = Processes()
    try:  # a key of the wrong type: applying the victim's events fails (WRONGTYPE)
        pseudonym = Pseudonyms(key).user(victim)
        client.set(RedisKeys(settings.keys_prefix).history(pseudonym), "not a list")
        processes.start("worker", settings)
        with EventProducer(settings) as producer:
            for event in events:
                producer.send(event)
            producer.flush()
        failed = sum(e.user_id == victim for e in events)
        dlq = TopicNames.from_settings(settings).dlq
        letters = read_topic(settings.kafka_bootstrap, dlq, expected=failed, timeout_s=60)
        assert len(letters) == failed
        for letter in letters:
            assert "handler error" in letter["reason"], letter["reason"]
            assert victim not in letter["payload"]
            assert pseudonym in letter["payload"]
            assert letter["key"] != victim
        wait_until(
            lambda: ingest_counts(settings).get("applied") == len(events) - failed,
            30,
            "every other event applied",
        )
    finally:
        client.close()
        processes.stop_all()


def test_a_silent_redis_is_noticed_within_the_socket_timeout_and_ingest_recovers(
    kafka_bootstrap: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """SIGSTOP keeps the TCP connection up and silent, as a network partition does: without a
    socket timeout a call would wait for the kernel's TCP timeout (minutes)."""
    settings = _settings(kafka_bootstrap, private_redis, tmp_path / "data").model_copy(
        update={"redis_socket_timeout_s": 1.0}
    )
    events = list(sample_events(600, users=80, items=100, seed=45))
    processes = Processes()
    try:
        worker = processes.start("worker", settings)
        with EventProducer(settings) as producer:
            _send_until_applied(settings, producer, events[:200])
            os.kill(private_redis.pid, signal.SIGSTOP)
            try:
                for event in events[200:]:
                    producer.send(event)
                producer.flush()
                time.sleep(3.0)  # three socket timeouts
                retries = scrape_metrics(settings.worker_metrics_port)
            finally:
                os.kill(private_redis.pid, signal.SIGCONT)
            wait_until(lambda: ingest_counts(settings).get("applied") == 600, 30, "600 applied")
        assert retries.get("recstream_redis_retries_total", 0) >= 1, "the silence went unnoticed"
        assert worker.poll() is None, "the worker exited"
        assert ingest_counts(settings).get("dead_lettered", 0) == 0
    finally:
        processes.stop_all()
