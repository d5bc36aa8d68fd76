"""The broker killed (-9) mid-stream and started again with its log (`stack up --durable`):
producers buffer and retry, the worker resumes, no accepted event lost, none counted twice."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.samples import sample_events
from stream.local.processes import alive
from stream.local.stack import free_port, read_state, restart_broker, stack_down, stack_up
from tests.conftest import Processes, forget, ingest_counts, isolated_settings, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def durable(redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    """A durable stack of this test's own: killing its broker harms no other test."""
    base = Settings(data_dir=tmp_path / "data", redis_url=redis_url)
    state = stack_up(base, kafka_port=free_port(), durable=True)  # ours, even under make test
    settings = isolated_settings(state.kafka_bootstrap, redis_url, tmp_path / "data")
    try:
        yield settings.model_copy(update={"session_timeout_s": 30.0})
    finally:
        stack_down(base)
        forget(settings)


def test_a_broker_killed_and_restarted_with_its_log_loses_nothing(durable: Settings) -> None:
    """700 events wait in the log (the worker frozen) when the broker is killed, 1,000 more
    wait in the producer while it is away: every one is applied, once."""
    events = list(sample_events(2_000, users=300, seed=41))
    processes = Processes()
    try:
        worker = processes.start("worker", durable)
        with EventProducer(durable, delivery_timeout_ms=120_000) as producer:
            for event in events[:300]:
                producer.send(event)
            producer.flush()
            wait_until(lambda: ingest_counts(durable).get("applied") == 300, 60, "300 applied")
            worker.send_signal(signal.SIGSTOP)
            try:
                for event in events[300:1_000]:
                    producer.send(event)
                producer.flush()  # in the broker's log, not yet consumed
                state = read_state(durable)
                assert state is not None
                assert state.broker_pid is not None
                os.kill(state.broker_pid, signal.SIGKILL)
                wait_until(lambda: not alive(state.broker_pid or 0), 10, "the broker to die")

                def send_rest() -> None:  # buffered while the broker is away
                    for event in events[1_000:]:
                        producer.send(event)
                    producer.flush()

                sender = threading.Thread(target=send_rest)
                sender.start()
                time.sleep(2.0)
                restart_broker(durable)
            finally:
                worker.send_signal(signal.SIGCONT)
            sender.join(timeout=120)
            assert not sender.is_alive()
        wait_until(lambda: ingest_counts(durable).get("applied") == 2_000, 120, "all 2,000")
        time.sleep(2.0)  # redeliveries after the restart, if any, are duplicates by now
        counts = ingest_counts(durable)
        assert counts["applied"] == 2_000
        assert counts.get("dead_lettered", 0) == 0
    finally:
        processes.stop_all()
