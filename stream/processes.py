"""Start recstream processes (workers, API) as children with the same settings, and stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from stream.config import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """`settings` as `RECSTREAM_*` variables, on top of this process's environment."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            env.pop(f"RECSTREAM_{name.upper()}", None)
        elif isinstance(value, SecretStr):
            env[f"RECSTREAM_{name.upper()}"] = value.get_secret_value()
        else:
            env[f"RECSTREAM_{name.upper()}"] = str(value)
    return env


def spawn(command: str, settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """Run `recstream COMMAND` in a child process whose output goes to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stream", command],
            env=settings_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
    """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)
