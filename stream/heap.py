"""Hands heap pages that Python and torch have freed back to the OS, so that a long-running
process's RSS follows its live memory instead of the allocator's high-water mark; reads RSS."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)


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


def resident_mb(pid: int | str = "self") -> float:
    """Resident memory of a process (Linux /proc) in MiB; NaN where it is not reported."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def trim_heap() -> bool:
    """Release free heap pages now; False where the allocator offers no way to."""
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
