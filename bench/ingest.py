"""Ingest benchmark: sustained events/s end to end and produce-to-effect latency (prints figures).

    python -m bench.ingest [--events 100000] [--runs 3] [--workers 1 2] [--rate 1000 10000]
                           [--seconds 15] [--redis-cluster]

End to end = SDK -> broker -> Faust worker -> Redis effects. Baseline in the same run: the same
events applied straight to Redis by the store (no broker, no Faust), i.e. the ceiling of the
Redis side alone (measured beside every run, the median reported); and the producer alone
(the same SDK sending to the broker with no worker running), the rate no end-to-end run on
this box can pass. Each run is also repeated as a backlog the workers drain with the
producer done: what the workers reach without sharing the cores with it. Starts the local
stack unless RECSTREAM_KAFKA_BOOTSTRAP points at a broker; with --redis-cluster the state
goes to a local 3-primary Redis Cluster (on one machine it is not faster: it shows the cost
per event of the sharded path against one Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from tqdm import tqdm

from bench.load import probe_click, redis_of
from store.redis_keys import delete_prefixed
from stream.config import Settings
from stream.events.handlers import effect_of
from stream.events.producer import EventProducer
from stream.events.samples import sample_events
from stream.events.schema import ClickEvent, OrderEvent
from stream.events.topics import ensure_topics
from stream.local.processes import spawn, stop
from stream.local.stack import local_stack
from stream.wiring import blocking_redis_client, interaction_store, redis_client, redis_keys

SETTLE_S = 8.0  # for several workers to settle their partitions after the first joined


def _isolated(settings: Settings, tag: str) -> Settings:
    return settings.model_copy(
        update={
            "redis_prefix": f"bench:{tag}:",
            "topic_prefix": f"bench-{tag}.",
            "app_id": f"bench-{tag}",
            "log_level": "warning",
        }
    )


def _applied(client: redis.Redis, settings: Settings) -> int:
    """Events applied so far (on a cluster, summed over the shards)."""
    shards = redis_keys(settings).every_shard()
    return sum(int(client.hget(view.stats, "applied") or 0) for view in shards)


def _wait_applied(client: redis.Redis, settings: Settings, n: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _applied(client, settings) >= n:
            return time.monotonic()
        time.sleep(0.002)
    raise TimeoutError(f"only {_applied(client, settings)} of {n} applied in {timeout_s:.0f}s")


def baseline_redis_only(settings: Settings, events: list[ClickEvent | OrderEvent]) -> float:
    """Events/s of the store alone, in batches as the worker applies them."""

    async def run() -> float:
        client = redis_client(settings)
        store = interaction_store(settings, client)
        effects = [effect_of(e) for e in events]
        start = time.perf_counter()
        for i in range(0, len(effects), settings.batch_size):
            await store.apply_many(effects[i : i + settings.batch_size])
        elapsed = time.perf_counter() - start
        await client.aclose()
        return len(effects) / elapsed

    return asyncio.run(run())


@contextmanager
def _workers(settings: Settings, n: int) -> Iterator[None]:
    """`n` worker processes of one consumer group."""
    ensure_topics(settings)
    logs = settings.data_dir
    workers = [spawn("worker", settings, logs / f"bench-worker-{i}.log") for i in range(n)]
    try:
        yield
    finally:
        for worker in workers:
            stop(worker)


@contextmanager
def _warm_worker(
    settings: Settings, client: redis.Redis, linger_ms: int, workers: int = 1
) -> Iterator[EventProducer]:
    """A producer, with workers that have joined their group and applied a first event (and,
    with several, `SETTLE_S` for the group to settle on sharing the partitions)."""
    with _workers(settings, workers), EventProducer(settings, linger_ms=linger_ms) as producer:
        producer.send(probe_click("warmup"))
        producer.flush()
        _wait_applied(client, settings, 1, timeout_s=120)
        if workers > 1:
            time.sleep(SETTLE_S)
        yield producer


def _produce(producer: EventProducer, events: list[ClickEvent | OrderEvent]) -> None:
    for event in tqdm(events, desc="produce", unit="ev", file=sys.stderr, mininterval=1):
        producer.send(event)
    producer.flush()


def throughput_run(
    settings: Settings, events: list[ClickEvent | OrderEvent], client: redis.Redis, workers: int
) -> float:
    """Events/s from the first send to the last effect in Redis, with warmed-up workers."""
    with _warm_worker(settings, client, linger_ms=5, workers=workers) as producer:
        start = time.monotonic()
        _produce(producer, events)
        end = _wait_applied(client, settings, len(events) + 1, timeout_s=600)
    return len(events) / (end - start)


def backlog_run(
    settings: Settings, events: list[ClickEvent | OrderEvent], client: redis.Redis, workers: int
) -> tuple[float, float]:
    """(producer alone, workers alone) in events/s: the events are produced with no worker
    running (the SDK -> broker floor), then workers drain them, timed from the first tenth
    applied (past joining the group) to the last."""
    ensure_topics(settings)
    with EventProducer(settings, linger_ms=5) as producer:
        start = time.monotonic()
        _produce(producer, events)
        produced = len(events) / (time.monotonic() - start)
    with _workers(settings, workers):
        first = _wait_applied(client, settings, len(events) // 10, timeout_s=180)
        end = _wait_applied(client, settings, len(events), timeout_s=600)
    return produced, (len(events) - len(events) // 10) / (end - first)


def latency_run(settings: Settings, rate: int, seconds: float, client: redis.Redis) -> list[float]:
    """Produce-to-effect latencies (ms) of probes sent every 10 ms under `rate` events/s."""
    keys = redis_keys(settings)
    latencies: list[float] = []
    with _warm_worker(settings, client, linger_ms=1) as producer:
        load = sample_events(int(rate * seconds) + rate, seed=3)
        stop_load = threading.Event()

        def background() -> None:
            start = time.monotonic()
            for sent, event in enumerate(load):
                if stop_load.is_set():
                    return
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
                producer.send(event)

        loader = threading.Thread(target=background, daemon=True)
        loader.start()
        deadline = time.monotonic() + seconds
        try:
            with tqdm(desc=f"latency @ {rate} ev/s", unit="probe", file=sys.stderr) as bar:
                while time.monotonic() < deadline:
                    user = f"probe-{uuid.uuid4().hex[:12]}"
                    sent_at = time.perf_counter()
                    producer.send(probe_click(user))
                    while not client.exists(keys.for_user(user).history(user)):
                        if time.perf_counter() - sent_at > 10:
                            raise TimeoutError("a probe took more than 10 s")
                        time.sleep(0.0002)
                    latencies.append((time.perf_counter() - sent_at) * 1000)
                    bar.update()
                    time.sleep(max(0.0, 0.01 - (time.perf_counter() - sent_at)))
        finally:
            stop_load.set()
            loader.join()
    return latencies


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events per throughput run")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs (median reported)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="worker processes per run"
    )
    parser.add_argument(
        "--rate", type=int, nargs="+", default=[1_000, 10_000], help="latency loads"
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each latency run")
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="keep the state in a local 3-primary Redis Cluster instead of one Redis",
    )
    args = parser.parse_args()

    with local_stack(Settings()) as stack, redis_of(stack, args.redis_cluster) as base:
        client = blocking_redis_client(base)
        events = list(sample_events(args.events, users=10_000, items=50_000, seed=11))
        live: dict[int, list[float]] = {}
        drained: dict[int, list[float]] = {}
        produced: list[float] = []
        floors: list[float] = []
        for workers in args.workers:
            for _ in range(args.runs):
                # the floor beside every run: alone it moved by 30% from one run to the next
                floor_settings = _isolated(base, uuid.uuid4().hex[:8])
                floors.append(baseline_redis_only(floor_settings, events))
                delete_prefixed(client, floor_settings.redis_prefix)
                run_settings = _isolated(base, uuid.uuid4().hex[:8])
                live.setdefault(workers, []).append(
                    throughput_run(run_settings, events, client, workers)
                )
                delete_prefixed(client, run_settings.redis_prefix)
                run_settings = _isolated(base, uuid.uuid4().hex[:8])
                alone, drain = backlog_run(run_settings, events, client, workers)
                delete_prefixed(client, run_settings.redis_prefix)
                produced.append(alone)
                drained.setdefault(workers, []).append(drain)
                print(
                    f"  {workers} worker(s): {live[workers][-1]:,.0f} events/s end to end, "
                    f"{drain:,.0f} draining a backlog; producer alone {alone:,.0f}",
                    file=sys.stderr,
                )
        latency_rows = []
        for rate in args.rate:
            run_settings = _isolated(base, uuid.uuid4().hex[:8])
            lat = latency_run(run_settings, rate, args.seconds, client)
            delete_prefixed(client, run_settings.redis_prefix)
            latency_rows.append((rate, len(lat), _pct(lat, 0.5), _pct(lat, 0.99), max(lat)))

    producer_floor = statistics.median(produced)
    baseline = statistics.median(floors)
    print(
        f"\ningest benchmark ({args.events:,} events per run, {args.runs} runs, "
        f"batch {base.batch_size}, fetch wait {base.fetch_max_wait_ms} ms; "
        f"{'a 3-primary Redis Cluster' if args.redis_cluster else 'one Redis'})"
    )
    print(
        f"  floors (medians): store alone (no broker/Faust) {baseline:,.0f} events/s "
        f"(runs: {', '.join(f'{f:,.0f}' for f in floors)}); "
        f"producer alone (SDK -> broker, no worker) {producer_floor:,.0f} events/s"
    )
    for workers in args.workers:
        median = statistics.median(live[workers])
        drain = statistics.median(drained[workers])
        print(
            f"  {workers} worker(s): end to end (SDK -> broker -> Faust -> Redis, all on this "
            f"box) median {median:,.0f} events/s = {median / baseline:.0%} of store alone "
            f"(runs: {', '.join(f'{r:,.0f}' for r in live[workers])}); draining a backlog "
            f"{drain:,.0f} events/s = {drain / baseline:.0%} of store alone"
        )
    print("  produce-to-effect latency, 1 worker (probe every 10 ms under a steady load):")
    for rate, n, p50, p99, worst in latency_rows:
        print(
            f"    {rate:>6,} ev/s: p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {worst:6.1f} ms"
            f"  ({n} probes)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
