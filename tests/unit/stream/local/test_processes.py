"""Child processes, one way: settings travel unchanged; `stop` ends a spawned child (with its
exit code) or a detached server (by PID), escalating to SIGKILL; memory is read from /proc."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.config import Settings
from stream.local.processes import alive, resident_mb, settings_env, spawn_detached, stop


def test_child_processes_get_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(topic_prefix="x.", history_len=7, data_dir=Path("/tmp/d"))
    for name, value in settings_env(original).items():
        if name.startswith("RECSTREAM_"):
            monkeypatch.setenv(name, value)
    assert Settings() == original


def test_stop_ends_a_detached_server_by_pid(tmp_path: Path) -> None:
    pid = spawn_detached(["/bin/sleep", "60"], tmp_path / "sleep.log")
    assert alive(pid)
    assert stop(pid) is None
    assert not alive(pid)


def _ready_child(ignore_sigterm: bool = False) -> subprocess.Popen[bytes]:
    """A Python child that has started (it said so) and then sleeps."""
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_sigterm else ""
    code = f"import signal, sys, time; {ignore}print('ready', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    child.stdout.close()
    return child


def test_stop_returns_a_childs_exit_code_and_kills_one_that_ignores_sigterm() -> None:
    assert stop(_ready_child()) == -15
    stubborn = _ready_child(ignore_sigterm=True)
    began = time.monotonic()
    assert stop(stubborn, timeout_s=0.5) == -9
    assert time.monotonic() - began < 10


def test_resident_memory_is_read_for_this_process_and_a_child() -> None:
    assert resident_mb() > 10
    child = _ready_child()
    try:
        assert resident_mb(child.pid) > 1
    finally:
        stop(child)
    with pytest.raises(FileNotFoundError):
        resident_mb(child.pid)
