"""The local stack stops the broker it started, also when its process gets SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stream.config import Settings
from stream.local.stack import read_state

_HOLD_STACK = """
import sys, time
from stream.config import Settings
from stream.local.stack import local_stack
with local_stack(Settings()):
    print("up", flush=True)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def test_a_script_stopped_with_sigterm_stops_the_broker_its_local_stack_started(
    tmp_path: Path, redis_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RECSTREAM_KAFKA_BOOTSTRAP"}
    env |= {"RECSTREAM_DATA_DIR": str(tmp_path), "RECSTREAM_REDIS_URL": redis_url}
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_STACK], env=env, stdout=subprocess.PIPE, text=True
    ) as script:
        try:
            assert script.stdout is not None
            assert script.stdout.readline().strip() == "up"
            state = read_state(Settings(data_dir=tmp_path))
            assert state is not None
            assert state.broker_pid is not None
            assert _alive(state.broker_pid)
            script.send_signal(signal.SIGTERM)
            script.wait(timeout=30)
            deadline = time.monotonic() + 10
            while _alive(state.broker_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(state.broker_pid)
            assert read_state(Settings(data_dir=tmp_path)) is None
        finally:
            script.kill()
