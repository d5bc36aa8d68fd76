"""Fault injection over real processes: a private broker or Redis where the fault would harm
other tests, and an API poller that records every answer while the fault lasts."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from store.redis_keys import RedisKeys
from stream.config import Settings
from stream.local.processes import stop
from stream.local.stack import free_port, start_broker, start_redis
from stream.wiring import redis_client, vector_state


class ApiPoller:
    """Asks the API for a user's recommendations every `every_s` until stopped; keeps each
    answer's status and source, so a test can say the API answered throughout."""

    def __init__(self, api: TestClient, user_id: str, every_s: float = 0.05) -> None:
        self.api, self.user_id, self.every_s = api, user_id, every_s
        self.statuses: Counter[int] = Counter()
        self.sources: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            answer = self.api.get(f"/v1/users/{self.user_id}/recommendations")
            self.statuses[answer.status_code] += 1
            if answer.status_code == 200:
                self.sources[answer.json()["source"]] += 1

    def __enter__(self) -> ApiPoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def events_learned(settings: Settings) -> int:
    """Events learned by the model version Redis serves (-1 while Redis is away)."""

    async def read() -> int:
        client = redis_client(settings, timeout_s=2)
        try:
            return await vector_state(settings, client).events_learned()
        except Exception:
            return -1
        finally:
            await client.aclose()

    return asyncio.run(read())


def served_version(settings: Settings) -> int:
    """The model version Redis serves (0: none yet)."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return int(client.get(RedisKeys(settings.keys_prefix).model_version) or 0)
    finally:
        client.close()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A broker of this test's own (bootstrap, pid): freezing it harms no other test."""
    port = free_port()
    pid = start_broker(port, tmp_path / "broker")
    try:
        yield f"127.0.0.1:{port}", pid
    finally:
        stop(pid)


class PrivateRedis:
    """A redis-server of this test's own, which it may kill, restart empty or freeze."""

    def __init__(self, state_dir: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("Redis fault tests need redis-server on PATH")
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.pid = start_redis(self.port, state_dir)

    def restart_empty(self) -> None:
        stop(self.pid)
        self.pid = start_redis(self.port, self.state_dir)

    def snapshot(self) -> None:
        """BGSAVE, returning once the snapshot is on disk."""
        client = redis.Redis(port=self.port, socket_timeout=5)
        try:
            before = client.info("persistence")["rdb_saves"]
            client.bgsave()
            deadline = time.monotonic() + 30
            while client.info("persistence")["rdb_saves"] == before:
                assert time.monotonic() < deadline, "BGSAVE did not finish"
                time.sleep(0.05)
        finally:
            client.close()

    def crash_and_restore(self) -> None:
        """kill -9, then start again from the last snapshot (losing what came after it)."""
        os.kill(self.pid, signal.SIGKILL)
        stop(self.pid)  # reaps it
        self.pid = start_redis(self.port, self.state_dir)

    def stop(self) -> None:
        stop(self.pid)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    (tmp_path / "redis").mkdir()
    server = PrivateRedis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()
