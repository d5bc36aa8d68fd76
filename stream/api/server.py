"""Entry point of an API process (uvicorn), or of several sharing one port.

With `RECSTREAM_API_PROCESSES` above 1, each process binds the port with SO_REUSEPORT and the
kernel spreads connections over them: one event loop per core instead of one per host. A
supervisor starts them, restarts one that dies, and stops them all on SIGTERM/SIGINT. They
map one copy of the exact index (`Settings.shares_index`); each keeps its own metrics.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn
from redis import RedisError

from store.cluster_client import is_cluster_node
from stream.config import Settings
from stream.errors import StreamError
from stream.startup import LOG_FORMAT, start_process

log = logging.getLogger(__name__)
RESTART_AFTER_S = 1.0  # a process that died is started again after this
_STOP_S = 10.0  # then a process still running is killed


class ApiProcessesError(StreamError, ValueError):
    """Several API processes asked for in a way they cannot share a port."""


def run_api(settings: Settings) -> None:
    """Serve the HTTP API on `settings.api_host:api_port` until SIGTERM/SIGINT, in
    `settings.api_processes` processes."""
    if settings.api_processes == 1:
        _serve(settings, reuse_port=False)
        return
    if settings.api_port == 0:
        raise ApiProcessesError("several API processes need a fixed RECSTREAM_API_PORT, not 0")
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ApiProcessesError("several API processes need SO_REUSEPORT (Linux, BSD, macOS)")
    _supervise(settings)


def _serve(settings: Settings, reuse_port: bool) -> None:
    from stream.api.app import create_api  # here, not in the supervisor: ~180 MB of imports

    start_process(settings, configure_logging=False)  # uvicorn configures its logging
    config = uvicorn.Config(
        create_api(settings, listen_when_ready=reuse_port),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level,
        access_log=False,  # paths hold user ids; stream.api.metrics logs route templates
    )
    server = uvicorn.Server(config)
    if not reuse_port:
        server.run()
        return
    family = socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.api_host, settings.api_port))
    server.run(sockets=[sock])


def settings_for_processes(settings: Settings) -> Settings:
    """The API processes' settings: with RECSTREAM_REDIS_CLUSTER=auto, the supervisor's answer
    to "is Redis a cluster?" (the CLI asked it at start) handed down, so that a process
    spawned, or restarted, does not ask again; a Redis that does not answer leaves the
    question to each process, which asks, and warns, where it first uses Redis."""
    if settings.redis_cluster != "auto":
        return settings
    try:
        cluster = is_cluster_node(settings.redis_url)
    except (RedisError, OSError):
        return settings
    return settings.model_copy(update={"redis_cluster": "yes" if cluster else "no"})


def _supervise(settings: Settings) -> None:
    """Run `api_processes` servers on one port; restart any that exits until told to stop."""
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    served = settings_for_processes(settings)

    def start() -> BaseProcess:
        process = context.Process(target=_serve, args=(served, True), daemon=False)
        process.start()
        return process

    processes = [start() for _ in range(settings.api_processes)]
    log.info(
        "%d API processes on %s:%d (RECSTREAM_API_PROCESSES)",
        len(processes),
        settings.api_host,
        settings.api_port,
    )
    while not stopping:
        time.sleep(0.2)
        for n, process in enumerate(processes):
            if not stopping and not process.is_alive():
                log.error("API process %d exited (%s); starting another", n, process.exitcode)
                time.sleep(RESTART_AFTER_S)
                processes[n] = start()
    for process in processes:
        if process.pid is not None and process.is_alive():
            process.terminate()
    deadline = time.monotonic() + _STOP_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
