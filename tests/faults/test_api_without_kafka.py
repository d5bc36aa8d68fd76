"""The API keeps answering when Kafka does not: a replica starts and serves reads with no
broker at all, and ingest against a broker that went silent answers 503 with `Retry-After`
in bounded time, on threads of its own, while recommendations keep coming."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stream.api.app import create_api
from stream.local.stack import free_port
from tests.conftest import isolated_settings, wait_until

pytestmark = pytest.mark.integration

CLICK = {"type": "click", "event_id": "k-1", "user_id": "u", "ts": 1767225600000, "item_id": "i"}


def test_a_replica_starts_and_serves_reads_with_no_broker(redis_url: str, tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens: no broker at all
    settings = isolated_settings(nowhere, redis_url, tmp_path / "data")
    began = time.monotonic()
    with TestClient(create_api(settings)) as api:
        wait_until(lambda: api.get("/readyz").status_code == 200, 10, "the replica to be ready")
        started_s = time.monotonic() - began
        assert api.get("/v1/users/u/recommendations").status_code == 200
        sent = time.monotonic()
        answer = api.post("/v1/events", json=[CLICK])
        ingest_s = time.monotonic() - sent
    assert started_s < 10, f"start-up waited {started_s:.1f}s for Kafka"
    assert answer.status_code == 503
    assert answer.headers["Retry-After"]
    assert "event log unavailable" in answer.json()["reason"]
    assert ingest_s < 15, f"ingest waited {ingest_s:.1f}s"


def test_ingest_to_a_silent_broker_is_a_bounded_503_and_reads_keep_answering(
    private_broker: tuple[str, int],
    redis_url: str,
    tmp_path: Path,
) -> None:
    bootstrap, broker_pid = private_broker
    settings = isolated_settings(bootstrap, redis_url, tmp_path / "data")
    with TestClient(create_api(settings)) as api:
        assert api.post("/v1/events", json=[CLICK]).status_code == 202
        os.kill(broker_pid, signal.SIGSTOP)
        try:
            ingest: list[tuple[int, float]] = []

            def post(n: int) -> None:
                sent = time.monotonic()
                event = {**CLICK, "event_id": f"k-frozen-{n}"}
                status = api.post("/v1/events", json=[event]).status_code
                ingest.append((status, time.monotonic() - sent))

            posting = [threading.Thread(target=post, args=(n,)) for n in range(40)]
            for thread in posting:
                thread.start()
            time.sleep(0.5)
            reads = []
            for _ in range(20):
                sent = time.monotonic()
                status = api.get("/v1/users/u/recommendations").status_code
                reads.append((status, time.monotonic() - sent))
            for thread in posting:
                thread.join(timeout=60)
        finally:
            os.kill(broker_pid, signal.SIGCONT)
    assert {status for status, _ in reads} == {200}
    assert max(seconds for _, seconds in reads) < 2.0, reads
    assert {status for status, _ in ingest} == {503}, ingest
    assert max(seconds for _, seconds in ingest) < 15, ingest
