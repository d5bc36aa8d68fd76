"""Sustained load: ingest at a fixed rate plus recommendation queries for several minutes.

    python -m bench.soak [--seconds 300] [--rate 500] [--qps 100] [--json OUT]
                         [--history-len N] [--trainer-dedup-window N] [--users N]
                         [--items N] [--feed-retention-s S]
                         [--visit-requests N] [--visit-gap-s S]

Starts the local stack, a worker, the trainer and an API replica (real processes), produces
synthetic events at `--rate` through the SDK and asks the API for `--qps` recommendations/s
(new and returning users). Every 10 s it samples consumer lag (the worker's metric), each
process's resident memory (Linux /proc), Redis memory and the size of the newest model
files (`checkpoint_file_mb`: the trainer's full resume state, written every
RECSTREAM_CHECKPOINT_STATE_S; `model_file_mb`: what workers and replicas load, written with
every version). Prints query latency p50/p99 (a baseline: /healthz in the same run, the
HTTP floor), the error rate, the lag, and memory at the first, middle and last sample: flat
memory is the aim (capped histories, bounded vocabulary). Every structure is capped, and
small caps (`--history-len`, `--users`, `--items`, `--trainer-dedup-window`,
`--feed-retention-s`) let a run of minutes reach them and show the plateau (the trainer and
the API grow with the items seen so far, up to the catalogue); Redis then grows only by the
idempotency records, reported per event over the second half. The growth of each memory
figure over the second half is also given as a slope (MB/min).

Queries: the users take turns, each asked `--visit-requests` times `--visit-gap-s` apart
per visit (default 1: every user once per round, which at 100 q/s and 6,000 users is once a
minute, a new visit each time).

User vectors: how many the API prepared off the request path before serving new versions,
how many it had to make while a request waited, and of those the misses: requests of users
it prepares for (asking again within RECSTREAM_PREPARE_WINDOW_S) that still waited (point 2
of issue 17: none, steady). A visit's first request waits for its forward pass.

Each 10 s sample also holds the cores each role used since the last one (`<role>_cores`:
api, worker, trainer, redis, broker, and other: this benchmark and its load generator), so a
lag can be told apart from a busy broker.

Freshness: every second a new user clicks, and the API is asked until its answer reflects
the click (`as_of_event_id`); p50/p99 of produce -> recommendations (the first probe, which
waits for the worker to join its group, is a warm-up).

Events carry the time they are sent, as live ingest would. The local test broker (Tansu's
memory engine) scans a partition's record batches on every fetch, so its fetches slow down
as a run stores more: past ~15 minutes at 500 events/s on 2 cores the consumers fall
behind it. Point RECSTREAM_KAFKA_BOOTSTRAP at Apache Kafka for longer runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import redis
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

from bench.load import cpu_by_role, probe_click, produce_at, wait_ready
from store.redis_keys import delete_prefixed
from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.topics import ensure_topics
from stream.local.processes import resident_mb, spawn, stop
from stream.local.stack import free_port, local_stack


def _lag(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "recstream_consumer_lag":
                return float(sample.value)
    return float("nan")


async def _query(base: str, qps: float, seconds: float, path_of: Any) -> tuple[list[float], int]:
    """Ask `qps` requests/s for `seconds` (open loop), the n-th at `path_of(n)`; latencies in
    ms and the error count."""
    latencies: list[float] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=10)

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal errors
        began = time.perf_counter()
        try:
            async with session.get(base + path_of(n)) as answer:
                await answer.read()
                if answer.status != 200:
                    errors += 1
        except (aiohttp.ClientError, TimeoutError):
            errors += 1
        latencies.append((time.perf_counter() - began) * 1000)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = []
        began = time.monotonic()
        n = 0
        while time.monotonic() - began < seconds:
            tasks.append(asyncio.create_task(one(session, n)))
            n += 1
            await asyncio.sleep(max(0.0, began + n / qps - time.monotonic()))
        await asyncio.gather(*tasks)
    return latencies, errors


def _user_vectors_made(base: str) -> dict[str, float]:
    """The API's `recstream_api_user_vectors_total` by `when` (prepared / on_request), and
    `missed`: its `recstream_api_prepared_user_misses_total`."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    made = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "recstream_api_user_vectors_total":
                made[sample.labels["when"]] = sample.value
            elif sample.name == "recstream_api_prepared_user_misses_total":
                made["missed"] = sample.value
    return made


def visiting_user(users: int, visits: int, gap: int, n: int) -> int:
    """The user of the `n`-th query when each user visits with `visits` requests, `gap`
    queries apart, and the users take turns (`visits` 1: every user once per round).

    >>> [visiting_user(100, 2, 3, n) for n in range(8)]
    [0, 1, 2, 0, 1, 2, 3, 4]
    """
    round_, slot = divmod(n, visits * gap)
    return (round_ * gap + slot % gap) % users


def _freshness(settings: Settings, base: str, stop_at: threading.Event) -> tuple[list[float], int]:
    """Every second, a click of a new user, then the API asked (every 5 ms) until its answer
    reflects it (`as_of_event_id` is the click): produce -> recommendations, in ms, and how
    many probes the API did not answer in time (a probe never reflected within 10 s counts
    as one too). The first probe is a warm-up, not counted: it waits for the worker to join
    its group."""
    took: list[float] = []
    failed = 0
    warm = False
    with EventProducer(settings, linger_ms=1) as producer:
        while not stop_at.wait(1.0):
            user = f"fresh-{uuid.uuid4().hex[:12]}"
            event = probe_click(user, "i1")
            sent = time.perf_counter()
            producer.send(event)
            producer.flush()
            reflected = False
            try:
                while time.perf_counter() - sent < 10.0 and not stop_at.is_set():
                    url = f"{base}/v1/users/{user}/recommendations?k=1"
                    with urllib.request.urlopen(url, timeout=5) as answer:
                        reflected = json.loads(answer.read())["as_of_event_id"] == user
                    if reflected:
                        if warm:
                            took.append((time.perf_counter() - sent) * 1000)
                        break
                    time.sleep(0.005)
            except OSError:  # a timeout or a refused connection: this probe fails, not the run
                pass
            failed += warm and not reflected and not stop_at.is_set()
            warm = warm or reflected
    return took, failed


def _pct(values: list[float], q: int) -> float:
    """The q-th percentile, within what was observed ('exclusive' quantiles extrapolate past
    the largest value when there are fewer than 100 samples)."""
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _growth_per_min(samples: list[dict[str, float]]) -> dict[str, float]:
    """Least-squares slope, MB per minute, of each memory figure over the given 10 s samples."""
    minutes = [i / 6.0 for i in range(len(samples))]
    keys = [k for k in samples[0] if k.endswith("_mb")] if samples else []
    if len(samples) < 3:
        return {k: float("nan") for k in keys}
    return {k: statistics.linear_regression(minutes, [s[k] for s in samples]).slope for k in keys}


def soak(
    base: Settings,
    seconds: float,
    rate: float,
    qps: float,
    shape: tuple[int, int],
    caps: dict[str, float],
    visit: tuple[int, float] = (1, 5.0),
) -> dict[str, Any]:
    visits, visit_gap_s = visit
    tag = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            **caps,
            "redis_prefix": f"soak:{tag}:",
            "topic_prefix": f"soak-{tag}.",
            "app_id": f"soak-{tag}",
            "api_port": free_port(),
            "insecure_open": True,  # a benchmark on 127.0.0.1
            "worker_metrics_port": free_port(),
            "log_level": "warning",
        }
    )
    ensure_topics(settings)
    logs = settings.data_dir / "soak"
    processes = {
        name: spawn(name, settings, logs / f"{name}.log") for name in ("worker", "trainer", "api")
    }
    client = redis.Redis.from_url(settings.redis_url)
    base_url = f"http://127.0.0.1:{settings.api_port}"
    samples: list[dict[str, float]] = []
    try:
        wait_ready(settings.api_port, timeout_s=300)  # several API processes take longer
        time.sleep(2.0 * settings.api_processes)  # /readyz answered from one; the others too
        stop_at = threading.Event()
        sent: list[int] = []
        producer = threading.Thread(
            target=lambda: sent.append(produce_at(settings, rate, seconds, shape, stop_at))
        )

        cpu_at = [(time.monotonic(), cpu_by_role())]  # the last reading only

        def sample() -> None:
            row = {f"{n}_rss_mb": resident_mb(p.pid) for n, p in processes.items()}
            row["lag"] = _lag(settings.worker_metrics_port)
            row["redis_mb"] = int(client.info("memory")["used_memory"]) / 2**20
            row.update(_version_files_mb(settings.checkpoint_dir))
            (then, before), now, used = cpu_at[0], time.monotonic(), cpu_by_role()
            for role, seconds_used in used.items():  # cores since the last sample, by role
                row[f"{role}_cores"] = (seconds_used - before.get(role, 0.0)) / (now - then)
            cpu_at[0] = (now, used)
            samples.append(row)

        sampler_stop = threading.Event()

        def sampler() -> None:
            with tqdm(total=int(seconds), desc="soak", unit="s", file=sys.stderr) as bar:
                began = time.monotonic()
                while not sampler_stop.wait(10.0):
                    sample()
                    bar.update(min(int(seconds), int(time.monotonic() - began)) - bar.n)
                    bar.set_postfix(lag=samples[-1]["lag"], api_mb=samples[-1]["api_rss_mb"])

        watcher = threading.Thread(target=sampler)
        fresh: list[tuple[list[float], int]] = []
        prober = threading.Thread(
            target=lambda: fresh.append(_freshness(settings, base_url, stop_at))
        )
        producer.start()
        watcher.start()
        prober.start()
        users = int(shape[0] * 1.2)  # a sixth of the queries are for users with no events
        user_of = partial(visiting_user, users, visits, max(1, round(qps * visit_gap_s)))
        try:
            latencies, errors = asyncio.run(
                _query(
                    base_url,
                    qps,
                    seconds,
                    lambda n: f"/v1/users/user-{user_of(n):06d}/recommendations",
                )
            )
            made = _user_vectors_made(base_url)
            floor, _ = asyncio.run(_query(base_url, qps, min(30.0, seconds), lambda _: "/healthz"))
        finally:  # the threads end before the processes they watch are stopped
            stop_at.set()
            producer.join()
            prober.join()
            sampler_stop.set()
            watcher.join()
        sample()
        probes, probe_failures = fresh[0] if fresh else ([], 0)
        middle = samples[len(samples) // 2]
        second_half_s = 10.0 * (len(samples) - 1 - len(samples) // 2)
        return {
            "seconds": seconds,
            "users": shape[0],
            "items": shape[1],
            "ingest_rate": rate,
            "events_sent": sent[0] if sent else 0,
            "queries": len(latencies),
            "query_errors": errors,
            "query_p50_ms": _pct(latencies, 50),
            "query_p99_ms": _pct(latencies, 99),
            "user_vectors_prepared": made.get("prepared", 0.0),
            "user_vectors_made_on_request": made.get("on_request", 0.0),
            "prepared_user_misses": made.get("missed", 0.0),
            "visit_requests": visits,
            "visit_gap_s": visit_gap_s,
            "healthz_p50_ms": _pct(floor, 50),
            "healthz_p99_ms": _pct(floor, 99),
            "freshness_probes": len(probes),
            "freshness_probes_failed": probe_failures,
            "freshness_p50_ms": _pct(probes, 50),
            "freshness_p99_ms": _pct(probes, 99),
            "lag_max": max(s["lag"] for s in samples),
            "lag_end": samples[-1]["lag"],
            "caps": caps,
            "first_sample": samples[0],
            "middle_sample": middle,
            "last_sample": samples[-1],
            "redis_bytes_per_event_second_half": (samples[-1]["redis_mb"] - middle["redis_mb"])
            * 2**20
            / max(1.0, rate * second_half_s),
            "growth_mb_per_min_second_half": _growth_per_min(samples[len(samples) // 2 :]),
            "samples_every_10s": samples,
        }
    finally:
        for process in processes.values():
            stop(process)
        delete_prefixed(client, settings.redis_prefix)
        client.close()


def _version_files_mb(directory: Path) -> dict[str, float]:
    """Sizes of the newest files of each kind: the trainer's full checkpoint (its resume
    state, written every `checkpoint_state_s`) and the serving part of every version, which
    every worker and replica loads."""
    sizes = {}
    for kind in ("checkpoint", "model"):
        files = sorted(directory.glob(f"{kind}-*.pt")) if directory.is_dir() else []
        try:
            sizes[f"{kind}_file_mb"] = files[-1].stat().st_size / 2**20 if files else 0.0
        except FileNotFoundError:  # pruned between the listing and the stat
            sizes[f"{kind}_file_mb"] = float("nan")
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--rate", type=float, default=500.0, help="events/s produced")
    parser.add_argument("--qps", type=float, default=100.0, help="recommendation requests/s")
    parser.add_argument("--users", type=int, default=50_000, help="distinct users in the stream")
    parser.add_argument("--items", type=int, default=20_000, help="distinct items in the stream")
    parser.add_argument("--history-len", type=int, default=Settings().history_len)
    parser.add_argument("--trainer-dedup-window", type=int, default=Settings().trainer_dedup_window)
    parser.add_argument("--feed-retention-s", type=float, default=Settings().feed_retention_s)
    parser.add_argument(
        "--visit-requests",
        type=int,
        default=1,
        help="requests of a user per visit (1: each user asked once per round of all users)",
    )
    parser.add_argument(
        "--visit-gap-s", type=float, default=5.0, help="between the requests of one visit"
    )
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        settings = Settings().model_copy(update={"data_dir": Path(work), "model_dir": None})
        with local_stack(settings) as stack:
            caps = {
                "history_len": args.history_len,
                "trainer_dedup_window": args.trainer_dedup_window,
                "feed_retention_s": args.feed_retention_s,
            }
            shape = (args.users, args.items)
            visits = (args.visit_requests, args.visit_gap_s)
            result = soak(stack, args.seconds, args.rate, args.qps, shape, caps, visits)
    print(json.dumps(result, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0 if result["query_errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
