"""Several API processes on one port: each answers, one that dies is replaced, all stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import urllib.request
from collections import Counter

import pytest
import redis
from fastapi.testclient import TestClient

from store.index_sync import IndexFollower
from store.redis_keys import RedisKeys
from stream.api.app import create_api
from stream.config import Settings
from stream.local.processes import spawn, stop
from stream.local.stack import free_port
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def _children(parent: int) -> set[int]:
    """The API processes `parent` started (not multiprocessing's resource tracker)."""
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
    servers = set()
    for pid in out.stdout.split():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"spawn_main" in cmdline.read():
                    servers.add(int(pid))
        except OSError:
            continue  # it exited meanwhile
    return servers


def _get(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except OSError:
        return 0, {}


def test_a_process_sharing_the_port_takes_connections_only_once_its_index_is_loaded(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a process listens on a shared port, the kernel sends it a share of connections:
    listening while the index still loads would answer them 503 (a CI failure of the test
    below, a user's errors after every restart)."""
    complete = IndexFollower._complete

    async def slow_complete(self: IndexFollower) -> None:
        await asyncio.sleep(1.0)
        await complete(self)

    monkeypatch.setattr(IndexFollower, "_complete", slow_complete)
    with TestClient(create_api(settings, listen_when_ready=True)) as client:
        assert client.get("/readyz").status_code == 200
    with TestClient(create_api(settings)) as client:  # alone on its port: /readyz says 503
        assert client.get("/readyz").status_code == 503


def test_api_processes_share_the_port_and_one_that_dies_is_replaced(settings: Settings) -> None:
    port = free_port()
    api = settings.model_copy(update={"api_port": port, "api_processes": 2, "vector_dim": 8})
    keys = RedisKeys(api.redis_prefix)
    client = redis.Redis.from_url(api.redis_url)
    client.zadd(keys.item_clicks, {"popular-item": 3})
    process = spawn("api", api, api.data_dir / "api.log")
    try:
        wait_until(lambda: len(_children(process.pid)) == 2, 60, "two API processes")
        wait_until(lambda: _get(port, "/readyz")[0] == 200, 60, "the API to be ready")
        first = _children(process.pid)
        # Every connection is a new one: the kernel spreads them over both processes, once
        # both listen (each when its index is loaded); the answer names its process.
        served: Counter[int] = Counter()

        def recommend() -> None:
            url = f"http://127.0.0.1:{port}/v1/users/someone/recommendations?k=1"
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.loads(response.read())
                served[int(response.headers["X-Recstream-Replica"].rsplit(":", 1)[1])] += 1
            assert body["items"] == [{"item_id": "popular-item", "score": 3.0, "reason": "popular"}]

        def both_answered() -> bool:
            recommend()
            return set(served) == first

        wait_until(both_answered, 60, "both to answer")
        served.clear()
        for _ in range(40):
            recommend()
        assert set(served) == first  # each took a share of the 40 connections
        os.kill(sorted(first)[0], signal.SIGKILL)
        wait_until(lambda: _get(port, "/readyz")[0] == 200, 10, "the other one to answer")
        wait_until(
            lambda: len(_children(process.pid)) == 2 and _children(process.pid) != first,
            60,
            "a new process in place of the one killed",
        )
        wait_until(lambda: _get(port, "/readyz")[0] == 200, 60, "the API to answer again")
        children = _children(process.pid)
    finally:
        stop(process)
        client.close()
    assert process.returncode is not None
    wait_until(lambda: not any(os.path.exists(f"/proc/{c}") for c in children), 15, "all to stop")
    assert _get(port, "/healthz")[0] == 0  # nothing listens any more
