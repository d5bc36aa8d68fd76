"""Child processes, one way: start a recstream process (worker, trainer, API) with the same
settings, or a detached server (broker, Redis); stop either; read its memory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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


def spawn_detached(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start a server in a session of its own (it outlives this process), output appended to
    `log_path`, with `env` over this process's environment; returns its PID, which `stop`
    takes, from this process or a later one."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    append = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    return os.posix_spawn(
        argv[0],
        argv,
        {**os.environ, **(env or {})},
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log_path), append, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )


def alive(pid: int) -> bool:
    """Whether `pid` runs (reaping it first if it is our exited child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def stop(child: subprocess.Popen[bytes] | int, timeout_s: float = 20.0) -> int | None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`. A `spawn`ed child's exit
    code is returned; a PID (`spawn_detached`) gives None."""
    pid = child if isinstance(child, int) else child.pid
    running: Callable[[], bool] = (
        (lambda: alive(pid)) if isinstance(child, int) else (lambda: child.poll() is None)
    )
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not running():
            break
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout_s
        while running() and time.monotonic() < deadline:
            time.sleep(0.05)
    return None if isinstance(child, int) else int(child.wait())


def resident_mb(pid: int | str = "self") -> float:
    """Resident memory of a process (Linux /proc) in MiB; NaN where it is not reported."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
