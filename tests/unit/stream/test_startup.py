"""Process start: the heap trimmer hands freed heap pages back to the OS (glibc); what the
process imported is kept out of the cyclic garbage collector's way."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stream.local.processes import resident_mb
from stream.startup import _malloc_trim, start_heap_trimmer, trim_heap

glibc = pytest.mark.skipif(_malloc_trim() is None, reason="the C library is not glibc")


@glibc
def test_trimming_returns_freed_heap_pages_to_the_os() -> None:
    chunks = [bytearray(b"x" * 100_000) for _ in range(1_500)]  # under the mmap threshold
    pin = bytearray(b"y" * 100_000)  # sits above them, so free() alone cannot shrink the heap
    del chunks
    before = resident_mb()
    assert trim_heap()
    assert before - resident_mb() > 50
    assert pin[0] == ord("y")


@glibc
def test_a_trimmer_thread_starts_only_when_an_interval_is_set() -> None:
    assert start_heap_trimmer(0) is None
    thread = start_heap_trimmer(3600)
    assert thread is not None
    assert thread.daemon
    assert thread.is_alive()


def test_a_started_process_leaves_its_imports_out_of_garbage_collections() -> None:
    """An API process tracks ~250k objects, ~240k of them from its imports (torch, FastAPI,
    ...); every full collection traversed them all, 130-200 ms with the event loop stopped,
    about once a second under 500 requests/s. In a fresh interpreter, as a process starts."""
    script = (
        "import gc, torch\n"
        "from stream.config import Settings\n"
        "from stream.startup import start_process\n"
        "start_process(Settings(heap_trim_s=0))\n"
        "frozen, young = gc.get_freeze_count(), len(gc.get_objects())\n"
        "assert frozen > 50_000 and young < frozen / 10, (frozen, young)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
