"""Serving benchmark: HTTP recommendation latency at fixed request rates (prints figures).

    python -m bench.serving [--sizes 100000 1000000] [--factory IDMap2,IVF1024,Flat]
        [--rates 500 1000 2000 4000] [--seconds 5] [--processes 1 2] [--ingest 1000]
        [--vectors trained|random] [--unshared-too]

Per catalogue size (dim 64): item and user vectors go to Redis, the API (1, then 2 processes on
one port, mapping one index) builds its index from Redis, and a separate load-generating
process sends GET /v1/users/{u}/recommendations at fixed rates (open loop: latency counts
from the scheduled send time, so queueing shows).
With `--ingest R` (default 1,000), a worker and the trainer run beside the API, and events of
the queried users on the catalogue's items are produced at R/s throughout: the API serves
while the worker applies them and re-embeds users and the trainer learns them and publishes
a version a second (its vectors of the items it learned replace the preloaded ones; queried
users are re-embedded with every version). `--ingest 0`: serving alone.
Item vectors: `trained` (bench/trained_vectors.py: a two-tower trained on a synthetic shop
of that size, cached) or `random`.
Baselines in the same run: brute-force numpy top-10 over the same vectors, in process, and
GET /healthz at the same rate through the same stack (HTTP, FastAPI, middleware, and the same
ingest beside). Recall@10 of the chosen index against exact search (user vectors as queries)
is measured in process too. After each setup: the API processes' own and mapped memory, and
their PSS (`--unshared-too`: the same with an index per process, to show what sharing saves).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import redis
import redis.asyncio as aioredis
from tqdm import tqdm

from bench.index_recall import exact_search_ms, measure, tenth_scores
from bench.load import cpu_by_role, cpu_share, memory_of, produce_at, wait_ready
from bench.trained_vectors import trained_vectors
from store.faiss_index import FaissVectorIndex
from store.redis_keys import RedisKeys, delete_prefixed
from store.vector_state import RedisVectorState
from stream.config import Settings
from stream.events.topics import ensure_topics
from stream.local.processes import spawn, stop
from stream.local.stack import free_port, local_stack

DIM = 64
USERS = 1_000
_TRAINED_EVENTS, _TRAINED_DRIFT = 200_000, 40_000  # bench/index_recall.py's defaults: one cache


def _vectors(n: int, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    unit: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


async def _load_redis(settings: Settings, items: npt.NDArray[np.float32]) -> None:
    client = aioredis.from_url(settings.redis_url)
    state = RedisVectorState(client, RedisKeys(settings.redis_prefix), DIM)
    chunk = 20_000
    for start in tqdm(range(0, len(items), chunk), desc="redis", unit="chunk"):
        ids = [_item(n) for n in range(start, min(start + chunk, len(items)))]
        await state.put_item_vectors(ids, items[start : start + chunk], model_version=1)
    users = _vectors(USERS, seed=1)
    for u in range(USERS):
        await state.put_user_vector(_user(u), users[u], model_version=1, updated_ms=0)
    await client.aclose()


def _item(n: int) -> str:
    return f"item-{n:06d}"  # as bench.load's synthetic events name them


def _user(n: int) -> str:
    return f"user-{n:06d}"


def _bare_index(
    bench: Settings, items: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]
) -> tuple[float, float, float]:
    """recall@10, p50 and p99 ms of one search of the API's index type, in process."""
    index = FaissVectorIndex(
        DIM,
        bench.index_factory,
        search_threads=1,
        nprobe=bench.index_nprobe,
        ef_search=bench.index_ef_search,
    )
    index.upsert([str(n) for n in range(len(items))], items)
    index.wait_retrained()
    return measure(index, queries, tenth_scores(items, queries))


async def _generate(
    port: int, rate: float, seconds: float, connections: int, health: bool = False
) -> tuple[list[float], float]:
    """Open-loop GETs at `rate`/s: latencies in ms (from the scheduled send time), elapsed s."""
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    slots = iter(range(total))
    latencies: list[float] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in slots:
                due = start + n / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                path = (
                    "/healthz" if health else f"/v1/users/{_user(n % USERS)}/recommendations?k=10"
                )
                writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.decode(errors="replace"))
                latencies.append((time.perf_counter() - due) * 1000)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies, time.perf_counter() - start


def _load_process(
    port: int,
    rate: float,
    seconds: float,
    health: bool,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    out.put(asyncio.run(_generate(port, rate, seconds, connections=64, health=health)))


def _measure(
    port: int, rate: float, seconds: float, health: bool = False
) -> tuple[float, float, float]:
    """(achieved req/s, p50 ms, p99 ms) from a separate load-generating process; `health`:
    of GET /healthz, the same stack without the work."""
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    process = multiprocessing.Process(
        target=_load_process, args=(port, rate, seconds, health, queue)
    )
    process.start()
    latencies, elapsed = queue.get()
    process.join()
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return len(ordered) / elapsed, statistics.median(ordered), p99


def run_size(
    settings: Settings,
    size: int,
    factory: str,
    rates: list[float],
    seconds: float,
    processes: list[int],
    ingest: float,
    trained: bool,
    unshared: bool = False,
) -> None:
    tag = uuid.uuid4().hex[:8]
    bench = settings.model_copy(
        update={
            "redis_prefix": f"bench:{tag}:",
            "topic_prefix": f"bench-{tag}.",
            "vector_dim": DIM,
            "index_factory": factory,
            "api_port": free_port(),
            "insecure_open": True,  # a benchmark on 127.0.0.1
            "log_level": "warning",
            "app_id": f"bench-{tag}",
            "data_dir": Path(tempfile.mkdtemp(prefix="bench-serving-")),  # a fresh trainer
        }
    )
    if trained:
        vectors = trained_vectors(size, _TRAINED_EVENTS, _TRAINED_DRIFT)
        items, queries = vectors.items, vectors.users[:200]
    else:
        items, queries = _vectors(size, seed=0), _vectors(200, seed=2)
    beside = f"ingest {ingest:,.0f} events/s learned beside" if ingest else "serving alone"
    print(f"\n== {size:,} {'trained' if trained else 'random'} items, {factory}, {beside} ==")
    print(
        f"baseline brute-force numpy top-10: median {exact_search_ms(items, queries):.2f} ms/query"
    )
    recall, p50, p99 = _bare_index(bench, items, queries)
    print(
        f"bare index search (nprobe {bench.index_nprobe}, ef {bench.index_ef_search}): "
        f"recall@10 {recall:.3f} vs exact, p50 {p50:.3f} ms, p99 {p99:.3f} ms"
    )
    asyncio.run(_load_redis(bench, items))
    stop_at, beside_api = threading.Event(), []
    producer = threading.Thread(
        target=produce_at, args=(bench, ingest, 86_400, (USERS, size), stop_at)
    )
    try:
        if ingest:
            ensure_topics(bench)
            logs = Path(bench.data_dir)
            beside_api = [spawn(n, bench, logs / f"bench-{n}.log") for n in ("worker", "trainer")]
            producer.start()
        for n, (count, shared) in enumerate(_api_setups(processes, unshared)):
            setup = bench.model_copy(update={"api_processes": count, "index_shared": shared})
            if n and not setup.index_snapshot_dir.exists():
                with _api(setup, "first start, index built from Redis"):
                    pass  # it leaves a snapshot: measured below as it restarts, like the others
            saved = setup.index_snapshot_dir.exists()
            how = "index from an earlier one's snapshot" if saved else "index built from Redis"
            _serve_and_measure(setup, rates, seconds, how)
    finally:
        stop_at.set()
        if producer.is_alive():
            producer.join()
        for process in beside_api:
            stop(process)
        client = redis.Redis.from_url(bench.redis_url)
        delete_prefixed(client, bench.redis_prefix)
        client.close()


def _api_setups(processes: list[int], unshared: bool) -> list[tuple[int, bool | None]]:
    """API process counts, each with the default index sharing, and with `unshared` the
    counts above 1 again with an index per process (what sharing saves, same run)."""
    setups: list[tuple[int, bool | None]] = [(count, None) for count in processes]
    return setups + [(count, False) for count in processes if count > 1 and unshared]


@contextlib.contextmanager
def _api(bench: Settings, how: str) -> Iterator[subprocess.Popen[bytes]]:
    """The API started and ready (every process of it), stopped on exit."""
    api = spawn("api", bench, Path(bench.data_dir) / f"bench-api-{bench.api_port}.log")
    try:
        began = time.monotonic()
        wait_ready(bench.api_port, timeout_s=1_800)
        print(
            f"{bench.api_processes} API process(es) ready ({how}) in "
            f"{time.monotonic() - began:.1f} s"
        )
        time.sleep(2.0 * bench.api_processes)  # /readyz answered from one; the others too
        yield api
    finally:
        stop(api)


def _serve_and_measure(bench: Settings, rates: list[float], seconds: float, how: str) -> None:
    with _api(bench, how) as api:
        _measure(bench.api_port, 200, 2)
        for rate in rates:
            cpu, began = cpu_by_role(), time.monotonic()
            achieved, p50, p99 = _measure(bench.api_port, rate, seconds)
            used = cpu_share(cpu, cpu_by_role(), time.monotonic() - began)
            health, h50, h99 = _measure(bench.api_port, rate, seconds, health=True)
            print(
                f"  {rate:>6,.0f} req/s offered: {achieved:>7,.0f} achieved,"
                f" p50 {p50:6.2f} ms, p99 {p99:7.2f} ms"
                f"  | /healthz: {health:>7,.0f} achieved ({achieved / health:.0%}),"
                f" p50 {h50:6.2f} ms, p99 {h99:7.2f} ms\n"
                f"           cores used meanwhile: {used}"
            )
        print(f"           API memory ({_sharing(bench)}): {memory_of(api.pid)}")


def _sharing(bench: Settings) -> str:
    if bench.api_processes == 1:
        return "one process"
    return "index shared" if bench.shares_index else "an index per process"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--factory", default="IDMap2,Flat")
    parser.add_argument(
        "--ingest", type=float, default=1_000.0, help="events/s ingested and learned (0: none)"
    )
    parser.add_argument("--vectors", choices=["trained", "random"], default="trained")
    parser.add_argument("--rates", type=float, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--processes", type=int, nargs="+", default=[1, 2], help="API processes on the port"
    )
    parser.add_argument(
        "--unshared-too",
        action="store_true",
        help="also run the counts above 1 with an index per process (RECSTREAM_INDEX_SHARED=0)",
    )
    args = parser.parse_args()
    settings = Settings()
    with local_stack(settings) as live:
        for size in args.sizes:
            run_size(
                live,
                size,
                args.factory,
                args.rates,
                args.seconds,
                args.processes,
                args.ingest,
                args.vectors == "trained",
                args.unshared_too,
            )


if __name__ == "__main__":
    main()
