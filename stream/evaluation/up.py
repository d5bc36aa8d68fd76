"""`recstream up` / `down`: the whole service on this machine with a sample shop loaded.

`up` starts the local stack (or uses the broker and Redis the settings name), a worker, the
trainer and one API replica; loads a sample catalogue and history under a prefix of its own
(`<RECSTREAM_REDIS_PREFIX>up:`, cleared at each start: a sandbox, not a deployment); prints
the URLs, a curl line that works and the demo page's address; then stays up until Ctrl-C or
`recstream down`, restarting a process that dies, and stops everything it started by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import aiohttp

from model.interaction import Interaction
from model.interaction_log import read_interactions
from model.synthetic import SyntheticConfig, SyntheticStream
from store.redis_keys import delete_prefixed
from store.vector_state import ItemMeta
from stream.api.auth import add_to_keys_file, new_key
from stream.config import Settings
from stream.errors import StreamError
from stream.evaluation.datasets import fetch_ml100k
from stream.events.producer import EventProducer
from stream.events.samples import wire_event
from stream.events.schema import ClickEvent, OrderEvent
from stream.events.topics import ensure_topics
from stream.local.processes import alive, spawn, spawn_detached, stop
from stream.local.stack import local_stack
from stream.startup import sigterm_unwinds
from stream.wiring import blocking_redis_client, interaction_store, redis_client, vector_state

ROLES = ("worker", "trainer", "api")
_FIRST_ANSWER_S = 300.0  # longest `up` waits for the first model version before giving up
_RESTART_S = 1.0


class UpError(StreamError, RuntimeError):
    """`recstream up` or `down` could not do what was asked; the message says why."""


@dataclass(frozen=True, slots=True)
class UpOptions:
    """What `recstream up` loads and where it listens."""

    data: Literal["synthetic", "ml-100k"] = "synthetic"
    events: int = 20_000
    host: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """A sample history (wire events, time-shifted to end now) and its item metadata."""

    events: list[ClickEvent | OrderEvent]
    items: dict[str, ItemMeta]
    users: list[str]  # the most active first


def state_path(settings: Settings) -> Path:
    """Where a running `up` records its PID and addresses (read by `down`)."""
    return settings.data_dir / "up.json"


def sample(options: UpOptions, now_ms: int) -> Sample:
    """The sample shop (or the first MovieLens-100K ratings), shifted to end at `now_ms`."""
    groups: list[list[Interaction]]
    items: dict[str, ItemMeta] = {}
    if options.data == "synthetic":
        stream = SyntheticStream(SyntheticConfig(users=500, items=2_000, seed=0))
        groups = list(stream.events(options.events))
        for item in stream.items:
            features = stream.item_features(item)
            items[item.item_id] = ItemMeta(features.get("category"), brand=features.get("brand"))
    else:
        ordered = sorted(read_interactions(fetch_ml100k()), key=lambda e: e.ts_ms)
        groups = [[e] for e in ordered[: options.events]]
    shift = now_ms - 1_000 - max(g[0].ts_ms for g in groups) if groups else 0
    events: list[ClickEvent | OrderEvent] = []
    activity: dict[str, int] = {}
    for number, group in enumerate(groups):
        moved = [replace(i, ts_ms=i.ts_ms + shift) for i in group]
        events.append(wire_event(f"sample-{number:07d}", moved))
        activity[group[0].user_id] = activity.get(group[0].user_id, 0) + 1
    users = sorted(activity, key=lambda u: (-activity[u], u))
    return Sample(events, items, users)


@dataclass(frozen=True, slots=True)
class Running:
    """Addresses of a running `up`, as printed and as `up.json` records them."""

    pid: int
    api_url: str
    demo_key: str
    admin_key: str
    user: str
    logs: str
    users: list[str]

    def lines(self) -> str:
        picks = ",".join(self.users)
        demo = f"{self.api_url}/demo#key={self.demo_key}&user={self.user}&users={picks}"
        curl = (
            f"curl -H 'Authorization: Bearer {self.demo_key}' "
            f"'{self.api_url}/v1/users/{self.user}/recommendations?k=5'"
        )
        return "\n".join(
            [
                "",
                f"recstream is up (pid {self.pid}; Ctrl-C or `recstream down` stops it)",
                f"  API       {self.api_url}   (OpenAPI docs: {self.api_url}/docs)",
                f"  demo page {demo}",
                f"  metrics   {self.api_url}/metrics",
                f"  logs      {self.logs}",
                f"  keys      read+ingest: {self.demo_key}",
                f"            admin:       {self.admin_key}",
                f"  try       {curl}",
                "",
            ]
        )


def _progress(message: str) -> None:
    print(f"[up] {message}", file=sys.stderr, flush=True)


def _prepare(settings: Settings, options: UpOptions) -> tuple[Settings, str, str]:
    """The sandbox's settings, with a fresh data directory, topics and two new keys."""
    data_dir = settings.data_dir / "up"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    keys_file = data_dir / "api-keys.json"
    demo_key, demo_entry = new_key("demo", ["read", "ingest"])
    admin_key, admin_entry = new_key("admin", ["admin", "read", "ingest"])
    add_to_keys_file(keys_file, demo_entry)
    add_to_keys_file(keys_file, admin_entry)
    key_file = data_dir / "demo.key"  # for scripts: curl -H "... $(cat .recstream/up/demo.key)"
    key_file.touch(mode=0o600)
    key_file.write_text(demo_key + "\n")
    update: dict[str, object] = {
        "redis_prefix": f"{settings.redis_prefix}up:",
        "topic_prefix": f"{settings.topic_prefix}up.",
        "app_id": f"{settings.app_id}-up",
        "data_dir": data_dir,
        "model_dir": None,
        "api_keys": None,
        "api_keys_file": keys_file,
        "insecure_open": False,
        "namespace": "",
    }
    if options.host is not None:
        update["api_host"] = options.host
    if options.port is not None:
        update["api_port"] = options.port
    up = settings.model_copy(update=update)
    with blocking_redis_client(up) as client:
        delete_prefixed(client, up.redis_prefix)
    ensure_topics(up)
    return up, demo_key, admin_key


async def _load(settings: Settings, data: Sample, api_url: str, key: str) -> None:
    """Item metadata to Redis, the history through Kafka; then wait until it is applied
    and the API serves a model version (learning the rest goes on: a first answer within
    seconds matters more), with a progress line every few seconds."""
    client = redis_client(settings)
    try:
        state = vector_state(settings, client)
        for item_id, meta in data.items.items():
            await state.put_item_meta(item_id, meta)
        _progress(f"{len(data.items):,} items' metadata written; sending {len(data.events):,}")
        with EventProducer(settings) as producer:
            for event in data.events:
                producer.send(event)
            producer.flush()
        store = interaction_store(settings, client)
        began = time.monotonic()
        said = began
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                stats = await store.stats()
                done = stats.applied + stats.duplicates + stats.dead_lettered
                version, learned = await _served(session, api_url, headers)
                now = time.monotonic()
                if done >= len(data.events) and version is not None:
                    _progress(
                        f"model version {version} served, {learned:,} of the sample's "
                        f"{len(data.events):,} events learned so far ({now - began:.0f}s; the "
                        "trainer goes on, a version a second: the demo page shows it)"
                    )
                    return
                if now - began > _FIRST_ANSWER_S:
                    raise UpError(f"no model version served after {_FIRST_ANSWER_S:.0f}s")
                if now - said >= 5:
                    said = now
                    _progress(
                        f"{done:,}/{len(data.events):,} events applied, {learned:,} learned, "
                        f"model version {version if version is not None else 'not yet'}"
                    )
                await asyncio.sleep(0.25)
    finally:
        await client.aclose()


async def _served(
    session: aiohttp.ClientSession, api_url: str, headers: dict[str, str]
) -> tuple[int | None, int]:
    """The model version the API serves (None: none yet) and the events it has learned."""
    try:
        async with session.get(f"{api_url}/v1/model", headers=headers) as response:
            if response.status != 200:
                return None, 0
            body = await response.json()
    except (aiohttp.ClientError, TimeoutError):
        return None, 0
    version = body.get("model_version")
    return (None if version is None else int(version)), int(body.get("events_learned") or 0)


def _api_url(settings: Settings) -> str:
    host = settings.api_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{settings.api_port}"


def _check_port_free(settings: Settings) -> None:
    family = socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.api_host, settings.api_port))
        except OSError as error:
            raise UpError(
                f"cannot serve on {settings.api_host}:{settings.api_port} ({error.strerror}): "
                "pass --port (or set RECSTREAM_API_PORT)"
            ) from None


@contextlib.contextmanager
def _processes(settings: Settings) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    children = {role: spawn(role, settings, settings.data_dir / f"{role}.log") for role in ROLES}
    try:
        yield children
    finally:
        _progress("stopping the worker, the trainer and the API")
        for child in children.values():
            stop(child)


def run_up(settings: Settings, options: UpOptions) -> int:
    """Start everything, load the sample, print where it is, stay up until told to stop."""
    recorded = read_running(settings)
    if recorded is not None:
        raise UpError(f"already up (pid {recorded.pid}, {recorded.api_url}): recstream down")
    began = time.monotonic()
    now_ms = int(time.time() * 1000)
    data = sample(options, now_ms)
    with sigterm_unwinds(), local_stack(settings) as stacked:
        up, demo_key, admin_key = _prepare(stacked, options)
        api_url = _api_url(up)
        _check_port_free(up)
        _progress(f"starting a worker, the trainer and the API on {api_url}")
        with _processes(up) as children:
            asyncio.run(_load(up, data, api_url, demo_key))
            running = Running(
                os.getpid(),
                api_url,
                demo_key,
                admin_key,
                data.users[0],
                str(up.data_dir),
                data.users[:12],
            )
            state_path(settings).write_text(json.dumps(asdict(running)))
            try:
                print(running.lines(), flush=True)
                _progress(f"first answer {time.monotonic() - began:.0f}s after start")
                _supervise(up, children)
            finally:
                state_path(settings).unlink(missing_ok=True)
    return 0


def _supervise(settings: Settings, children: dict[str, subprocess.Popen[bytes]]) -> None:
    """Until interrupted: a process that exits is logged and started again."""
    while True:
        time.sleep(_RESTART_S)
        for role, child in list(children.items()):
            code = child.poll()
            if code is not None:
                log = settings.data_dir / f"{role}.log"
                _progress(f"the {role} exited ({code}); starting it again (see {log})")
                children[role] = spawn(role, settings, log)


def read_running(settings: Settings) -> Running | None:
    """The `up` recorded as running, if its process is alive."""
    path = state_path(settings)
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    running = Running(**recorded)
    if not alive(running.pid):
        path.unlink(missing_ok=True)
        return None
    return running


def run_detached(settings: Settings, argv: list[str], timeout_s: float = _FIRST_ANSWER_S) -> int:
    """`up --detach`: run `up` in a session of its own; return once it answers."""
    if read_running(settings) is not None:
        raise UpError("already up: recstream down")
    log = settings.data_dir / "up.log"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pid = spawn_detached([sys.executable, "-m", "stream", "up", *argv], log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = read_running(settings)
        if running is not None and running.pid == pid:
            print(running.lines(), flush=True)
            return 0
        if not alive(pid):
            raise UpError(f"`recstream up` exited at start; see {log}")
        time.sleep(0.5)
    stop(pid)
    raise UpError(f"`recstream up` did not answer within {timeout_s:.0f}s; see {log}")


def run_down(settings: Settings, timeout_s: float = 60.0) -> int:
    """Stop a running `up` (it stops what it started) and wait until it has."""
    running = read_running(settings)
    if running is None:
        print("recstream down: nothing is up", file=sys.stderr)
        return 0
    os.kill(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(running.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(running.pid):
        raise UpError(f"pid {running.pid} still runs after {timeout_s:.0f}s")
    print(f"stopped recstream up (pid {running.pid})", file=sys.stderr)
    return 0
