"""Load shared by the benchmarks: synthetic events produced at a fixed rate through the SDK,
and the Redis a benchmark keeps its state in (one, or a local cluster)."""

from __future__ import annotations

import http.client
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.samples import sample_events
from stream.events.schema import ClickEvent
from stream.local.stack import start_redis_cluster, stop_redis_cluster


def probe_click(user_id: str, item_id: str = "probe") -> ClickEvent:
    """A click stamped now, whose effect (or reflection) a benchmark waits for."""
    return ClickEvent(event_id=user_id, user_id=user_id, ts=datetime.now(UTC), item_id=item_id)


def produce_at(
    settings: Settings,
    rate: float,
    seconds: float,
    shape: tuple[int, int],
    stop_at: threading.Event,
    seed: int = 7,
) -> int:
    """Send synthetic events of `shape` (users, items) at `rate`/s for `seconds` or until
    `stop_at`, stamped with the time they are sent (as live ingest); returns how many."""
    users, items = shape
    events = sample_events(int(rate * seconds) + 1, users=users, items=items, seed=seed)
    sent = 0
    began = time.monotonic()
    with EventProducer(settings) as producer:
        for event in events:
            if stop_at.is_set():
                break
            delay = began + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.send(event.model_copy(update={"ts": datetime.now(UTC)}))
            sent += 1
        producer.flush()
    return sent


_ROLES = {  # a process's role, by what its command line holds
    "api": "stream api",
    "worker": "stream worker",
    "trainer": "stream trainer",
    "redis": "redis-server",
    "broker": "tansu",
}


def _kb(path: Path, field: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def memory_of(pid: int) -> str:
    """The memory of a process and its children (API processes under their supervisor), as
    one line: own (anonymous) and mapped-file resident MB, and PSS (shared pages split
    between the processes that map them: what the host really spends on them)."""
    own: list[int] = []
    mapped = pss = 0
    for each in [pid, *_children(pid)]:
        try:
            own.append(_kb(Path(f"/proc/{each}/status"), "RssAnon:"))
            mapped += _kb(Path(f"/proc/{each}/status"), "RssFile:")
            pss += _kb(Path(f"/proc/{each}/smaps_rollup"), "Pss:")
        except OSError:
            continue  # gone meanwhile
    each_mb = " + ".join(f"{kb / 1024:,.0f}" for kb in own)
    return (
        f"{len(own)} processes: own {each_mb} MB, mapped files {mapped / 1024:,.0f} MB, "
        f"PSS {pss / 1024:,.0f} MB"
    )


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        found = [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []
    return [c for child in found for c in (child, *_children(child))]


def wait_ready(port: int, timeout_s: float) -> None:
    """Wait until the API on `port` answers /readyz with 200 (its index loaded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the API did not become ready")


def cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far by the live processes of each role on this host (Linux
    /proc; a child counts as its parent's role: API processes under their supervisor);
    the rest ('other': the benchmark itself) too. A process that has exited is not counted
    (the load generator's)."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[int, str, float]] = {}  # pid -> parent, role, seconds
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        role = next((r for r, mark in _ROLES.items() if mark in command), "other")
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        found[int(entry.name)] = (int(fields[1]), role, seconds)
    used = dict.fromkeys([*_ROLES, "other"], 0.0)
    for parent, role, seconds in found.values():
        if role == "other" and parent in found:
            role = found[parent][1]
        used[role] += seconds
    return used


def cpu_share(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """Cores used by each role between two `cpu_by_role` readings, as one line."""
    shares = {r: (after[r] - before.get(r, 0.0)) / seconds for r in after}
    return ", ".join(f"{r} {s:.2f}" for r, s in shares.items() if s >= 0.005)


@contextmanager
def redis_of(settings: Settings, cluster: bool) -> Iterator[Settings]:
    """`settings`, or with `cluster` the same pointed at a local 3-primary Redis Cluster."""
    if not cluster:
        yield settings
        return
    with tempfile.TemporaryDirectory() as state:
        nodes = start_redis_cluster(Path(state))
        try:
            print(f"Redis Cluster of 3 primaries at {nodes.url}", file=sys.stderr)
            yield settings.model_copy(update={"redis_url": nodes.url})
        finally:
            stop_redis_cluster(nodes)
