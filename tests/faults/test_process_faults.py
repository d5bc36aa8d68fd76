"""A worker killed mid-stream, and a broker frozen for a while (SIGSTOP, then SIGCONT): no
accepted event lost, none counted twice, the API answering throughout."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stream.api.app import create_api
from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.samples import sample_events
from tests.conftest import Processes, forget, ingest_counts, isolated_settings, wait_until
from tests.faults.conftest import ApiPoller

pytestmark = pytest.mark.integration


def test_a_worker_killed_mid_stream_loses_nothing_and_counts_nothing_twice(
    settings: Settings,
) -> None:
    events = list(sample_events(4_000, users=400, seed=31))
    processes = Processes()
    try:
        victim = processes.start("worker", settings)
        with TestClient(create_api(settings)) as api, ApiPoller(api, events[0].user_id) as poll:
            with EventProducer(settings) as producer:

                def send_all() -> None:
                    for event in events:
                        producer.send(event)
                    producer.flush()

                sender = threading.Thread(target=send_all)
                sender.start()
                wait_until(lambda: ingest_counts(settings).get("applied", 0) >= 500, 60, "500")
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=10)
                processes.start("worker", settings)
                sender.join(timeout=60)
            wait_until(lambda: ingest_counts(settings).get("applied") == 4_000, 90, "all 4,000")
            time.sleep(1.0)  # redelivered messages, if any, are skipped by now
        assert ingest_counts(settings)["applied"] == 4_000
        assert set(poll.statuses) == {200}
        assert poll.statuses[200] > 10
    finally:
        processes.stop_all()


def test_a_frozen_broker_delays_events_but_loses_none(
    private_broker: tuple[str, int], redis_url: str, tmp_path: Path
) -> None:
    bootstrap, broker_pid = private_broker
    settings = isolated_settings(bootstrap, redis_url, tmp_path / "data").model_copy(
        update={"session_timeout_s": 30.0}
    )
    events = list(sample_events(1_000, users=200, seed=32))
    processes = Processes()
    try:
        processes.start("worker", settings)
        with TestClient(create_api(settings)) as api, ApiPoller(api, events[0].user_id) as poll:
            with EventProducer(settings) as producer:
                for event in events[:500]:
                    producer.send(event)
                producer.flush()
                wait_until(lambda: ingest_counts(settings).get("applied") == 500, 60, "500")
                os.kill(broker_pid, signal.SIGSTOP)
                try:
                    answered_before = poll.statuses[200]
                    for event in events[500:]:
                        producer.send(event)  # buffered while the broker is frozen
                    time.sleep(5.0)
                    answered_while_frozen = poll.statuses[200] - answered_before
                finally:
                    os.kill(broker_pid, signal.SIGCONT)
                producer.flush()
            wait_until(lambda: ingest_counts(settings).get("applied") == 1_000, 120, "1,000")
        assert answered_while_frozen > 10
        assert set(poll.statuses) == {200}
    finally:
        processes.stop_all()
        forget(settings)
