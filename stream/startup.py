"""What every long-running process (worker, trainer, API replica) does at start, in one path:
logging, torch threads, CPU niceness, the heap trimmer, its imports frozen out of garbage
collections, its metrics server and its signals."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from types import FrameType

from prometheus_client import CollectorRegistry, start_http_server

from stream.config import Settings

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Histogram buckets (seconds) of the worker's freshness and the trainer's publish time.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def start_process(settings: Settings, *, configure_logging: bool = True, nice: int = 0) -> None:
    """Set up this process as `settings` say: log level (unless a server configures its own
    logging), torch threads (set once, here, never inside a library), niceness, heap trim;
    and what it has imported so far frozen out of garbage collections (`freeze_imports`)."""
    import torch  # here, not at module level: commands that only import `interrupt` stay quick

    if configure_logging:
        logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    torch.set_num_threads(settings.torch_threads)
    if nice:
        os.nice(nice)
    start_heap_trimmer(settings.heap_trim_s)
    freeze_imports()


def freeze_imports() -> None:
    """Move every object alive now (at start: modules, classes, functions, ~240k of an API
    process's ~250k tracked objects) out of the cyclic garbage collector's reach. Each full
    collection traversed them all: 130-200 ms with the event loop stopped, about once a
    second in a replica under 500 requests/s; after this, a few ms. They live as long as the
    process anyway (reference counting still frees any that die)."""
    gc.collect()
    gc.freeze()


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
    """Expose `registry` on `port` (0: not at all); a taken port is logged, not fatal."""
    if port == 0:
        return
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        log.error("metrics port %d unavailable (%s); metrics are not served", port, error)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop` in the running event loop: a clean, final shutdown."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def interrupt(signum: int, frame: FrameType | None) -> None:
    """A signal handler that unwinds like Ctrl-C, so `finally` blocks stop what was started."""
    raise KeyboardInterrupt


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt where it would otherwise kill the
    process outright (main thread, default handler); another handler is left alone."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library is not glibc (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def trim_heap() -> bool:
    """Hand heap pages that Python and torch have freed back to the OS now, so RSS follows
    live memory, not the allocator's high-water mark; False where the allocator cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def start_heap_trimmer(every_s: float) -> threading.Thread | None:
    """Trim the heap every `every_s` seconds from a daemon thread (ctypes drops the GIL while
    glibc trims); None when `every_s` is 0 or the allocator cannot trim."""
    if every_s <= 0 or _malloc_trim() is None:
        return None

    def run() -> None:
        while True:
            time.sleep(every_s)
            trim_heap()

    thread = threading.Thread(target=run, name="heap-trimmer", daemon=True)
    thread.start()
    log.debug("trimming the heap every %.0f s", every_s)
    return thread
