"""A producer whose broker went away must not leak a socket per reconnect attempt (kafka-python
3.0 left each failed attempt's socket open, held by the error it raised: the API's event log
would run out of descriptors in a long outage)."""

from __future__ import annotations

import gc
import os
import signal
import time
from pathlib import Path

import pytest

from stream.config import Settings
from stream.events.producer import EventProducer
from stream.local.processes import alive
from stream.local.stack import free_port, start_broker
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:  # closed meanwhile (the listing's own descriptor, for one)
            continue
    return count


def test_reconnects_to_a_dead_broker_leave_no_socket_open(tmp_path: Path) -> None:
    port = free_port()
    pid = start_broker(port, tmp_path)
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{port}")
    producer = EventProducer(settings, reconnect_backoff_ms=10, reconnect_backoff_max_ms=20)
    event = {"type": "click", "user_id": "u", "item_id": "i", "ts": "2026-01-01T00:00:00Z"}
    try:
        producer.send({**event, "event_id": "e1"})
        producer.flush()  # the topic's metadata is known: later sends never block on it
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), 10, "the broker to die")
        before = _open_sockets()
        producer.send({**event, "event_id": "e2"})  # buffered; the producer reconnects
        time.sleep(1.5)  # every 10-20 ms
        gc.collect()
        leaked = _open_sockets() - before
    finally:
        producer.close(timeout_s=1)
    assert leaked <= 2  # an attempt in flight
