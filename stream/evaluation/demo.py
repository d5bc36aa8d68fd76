"""`recstream demo`: the whole service on a real dataset. Starts the stack, a worker, the
trainer and an API replica; streams MovieLens-100K (or the synthetic shop) through Kafka in
time order; asks the API for each user's top-10 before their event (prequential); then
prints the live figures beside the offline `recstream eval` on the same events."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import torch
from tqdm import tqdm

from model.evaluation import EvaluationConfig, prequential
from model.interaction import Interaction
from model.interaction_log import read_interactions
from model.synthetic import SyntheticConfig, synthetic_interactions
from store.redis_keys import delete_prefixed
from stream.config import Settings
from stream.evaluation.datasets import fetch_ml100k
from stream.evaluation.live import LiveEvaluation, LiveFigures, percentile
from stream.events.producer import EventProducer
from stream.events.topics import ensure_topics
from stream.local.processes import spawn, stop
from stream.local.stack import free_port, local_stack
from stream.training.loop import fresh_learner
from stream.wiring import blocking_redis_client, interaction_store, redis_client, vector_state

K = 10
_WEEK_MS = 7 * 86_400_000
_SAY_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class DemoOptions:
    synthetic: bool = False
    limit: int | None = None
    json_out: Path | None = None
    warmup: float = 0.2


@dataclass(frozen=True, slots=True)
class IngestFigures:
    events: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.events / max(self.seconds, 1e-9)


def load_events(options: DemoOptions) -> list[Interaction]:
    """The dataset in time order (ties keep file order), cut to `limit`, moved by whole
    weeks to end within the last week: MovieLens-100K (1997-98) predates what the event
    schema takes (2000-2100), and the service checks event times against the clock. Gaps,
    weekdays and hours stay as they were, so live and offline see the same stream."""
    if options.synthetic:
        events = list(synthetic_interactions(SyntheticConfig(), options.limit or 100_000))
    else:
        events = list(read_interactions(fetch_ml100k()))
    events.sort(key=lambda e: e.ts_ms)
    events = events[: options.limit] if options.limit else events
    if not events:
        return events
    weeks = (int(time.time() * 1000) - events[-1].ts_ms) // _WEEK_MS
    return [replace(e, ts_ms=e.ts_ms + weeks * _WEEK_MS) for e in events]


async def _until(
    check: Callable[[], Awaitable[bool]],
    timeout_s: float,
    what: str,
    poll_s: float = 0.05,
    say: bool = True,
) -> None:
    """Poll `check` until it holds; a line every few seconds unless a bar shows progress."""
    began = time.monotonic()
    said = began
    while not await check():
        now = time.monotonic()
        if now - began > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        if say and now - said >= _SAY_EVERY_S:  # never a silent wait
            said = now
            print(f"still waiting for {what} ({now - began:.0f}s)", file=sys.stderr)
        await asyncio.sleep(poll_s)


class _Service:
    """Handles on the running service: its API, its Redis state, a producer."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        self.base_url = f"http://127.0.0.1:{settings.api_port}"
        self.client = redis_client(settings)
        self.store = interaction_store(settings, self.client)
        self.state = vector_state(settings, self.client)

    async def get(self, path: str) -> dict[str, Any]:
        try:
            async with self.session.get(self.base_url + path) as response:
                if response.status != 200:
                    return {}
                body: dict[str, Any] = await response.json()
                return body
        except aiohttp.ClientError:
            return {}

    async def applied(self) -> int:
        stats = await self.store.stats()
        return stats.applied + stats.duplicates

    async def learned(self) -> int:
        return await self.state.events_learned()

    async def reflects(self, user_id: str, event_id: str) -> bool:
        """Whether the user's vector (what the API ranks with) reflects `event_id`."""
        vector = await self.state.user_vector(user_id)
        return vector is not None and vector.as_of_event_id == event_id

    async def serves_latest(self) -> bool:
        served = (await self.get("/v1/model")).get("model_version")
        return served is not None and served == await self.state.model_version()


async def _warm_up(
    service: _Service, live: LiveEvaluation, events: list[Interaction], producer: EventProducer
) -> IngestFigures:
    """Seed a first model version, then burst the rest of the warm-up and time ingest."""
    seed = min(len(events), max(500, len(events) // 10))
    live.learn_without_scoring(list(enumerate(events[:seed])), producer)
    print(f"warm-up: {seed:,} events, waiting for a first model version", file=sys.stderr)

    async def seeded() -> bool:
        return await service.applied() >= seed and await service.serves_latest()

    await _until(seeded, 120, "a first model version to be served")
    burst = events[seed:]
    produced_at = time.monotonic()
    live.learn_without_scoring(list(enumerate(burst, seed)), producer)
    first: tuple[float, int] | None = None
    with tqdm(total=len(events), desc="ingest", unit="ev", file=sys.stderr) as bar:

        async def all_applied() -> bool:
            nonlocal first
            applied = await service.applied()
            if first is None and applied > seed:
                first = (time.monotonic(), applied)
            bar.update(applied - bar.n)
            return applied >= len(events)

        await _until(all_applied, 300, "the warm-up events to be applied", poll_s=0.002, say=False)
    began, counted = first or (produced_at, seed)
    if counted >= len(events):
        began, counted = produced_at, seed
    seconds = time.monotonic() - began
    print("waiting for the trainer to learn the warm-up events", file=sys.stderr)

    async def caught_up() -> bool:
        return await service.learned() >= len(events) and await service.serves_latest()

    await _until(caught_up, 600, "the trainer to learn the warm-up events")
    return IngestFigures(len(events) - counted, seconds)


async def _live(
    settings: Settings, events: list[Interaction], warmup: int
) -> tuple[LiveFigures, IngestFigures]:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        service = _Service(settings, session)
        try:

            async def ready() -> bool:
                return (await service.get("/readyz")).get("status") == "ready"

            await _until(ready, 120, "the API to be ready", poll_s=0.2)
            with EventProducer(settings, linger_ms=0) as producer, EventProducer(settings) as bulk:
                live = LiveEvaluation(session, service.base_url, producer, service.reflects, k=K)
                ingest = await _warm_up(service, live, events[:warmup], bulk)
                figures = await live.run(events, warmup)
        finally:
            await service.client.aclose()
    return figures, ingest


def _offline(settings: Settings, events: list[Interaction], warmup: float) -> dict[str, float]:
    """`recstream eval` of the recommender as the trainer builds it (the same tower,
    candidate sources and ranker, freshly made), on the same events and configuration."""
    torch.set_num_threads(settings.torch_threads)
    model = fresh_learner(settings, seed=0).recommender
    with tqdm(total=len(events), desc="offline", unit="ev", file=sys.stderr) as bar:

        def progress(done: int, _: dict[str, float]) -> None:
            bar.update(done)

        result = prequential(events, [model], EvaluationConfig(k=K, warmup=warmup), progress)
    return result.results[model.name]


def figures_json(
    live: LiveFigures, offline: dict[str, float], ingest: IngestFigures, events: int
) -> dict[str, Any]:
    """The demo's figures under the keys the README documents."""
    summary = live.score.summary(live.scored, events, 1)
    return {
        "events": events,
        "events_scored_live": live.scored,
        "live_hr_at_10": summary["hr"],
        "live_ndcg_at_10": summary["ndcg"],
        "offline_hr_at_10": offline["hr"],
        "offline_ndcg_at_10": offline["ndcg"],
        "ingest_events_per_s": ingest.per_s,
        "freshness_p50_ms": live.freshness_p50_ms,
        "freshness_p99_ms": live.freshness_p99_ms,
        "freshness_samples": len(live.freshness_ms),
        "publish_latency_ms": live.publish_latency_p50_ms,
        "publish_latency_max_ms": max(live.publish_latency_ms.values(), default=None),
        "model_versions_seen": len(live.publish_latency_ms),
        "stale_requests": live.stale,
        "model_lag_events_p50": percentile(live.model_lag, 0.5),
        "live_hr_by_source": {
            source: {"scored": scored, "hr": hits / max(scored, 1)}
            for source, (scored, hits) in live.sources.items()
        },
    }


def render(figures: dict[str, Any]) -> str:
    """The side-by-side table printed at the end."""

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f} ms"

    live_hr, off_hr = figures["live_hr_at_10"], figures["offline_hr_at_10"]
    gap = (live_hr - off_hr) / off_hr * 100 if off_hr else 0.0
    return "\n".join(
        [
            "",
            f"{figures['events']:,} events, {figures['events_scored_live']:,} scored live",
            f"{'':24s}{'live service':>14s}{'offline eval':>14s}",
            f"{'HR@10':24s}{live_hr:>14.4f}{off_hr:>14.4f}   ({gap:+.1f}%)",
            f"{'NDCG@10':24s}{figures['live_ndcg_at_10']:>14.4f}"
            f"{figures['offline_ndcg_at_10']:>14.4f}",
            f"ingest                  {figures['ingest_events_per_s']:,.0f} events/s "
            "(warm-up burst: first to last applied by one worker)",
            f"freshness               p50 {ms(figures['freshness_p50_ms'])}, "
            f"p99 {ms(figures['freshness_p99_ms'])} ({figures['freshness_samples']} probes: "
            "event produced -> the API's recommendations reflect it)",
            f"model publish           p50 {ms(figures['publish_latency_ms'])}, "
            f"max {ms(figures['publish_latency_max_ms'])} over "
            f"{figures['model_versions_seen']} versions (training step done -> served)",
            f"stale requests          {figures['stale_requests']} "
            "(the API did not yet reflect the user's previous event)",
        ]
    )


def run_demo(settings: Settings, options: DemoOptions) -> int:
    """Start what is needed, run the live and offline evaluations, stop everything."""
    events = load_events(options)
    warmup = int(len(events) * options.warmup)
    print(f"{len(events):,} events, the first {warmup:,} learned as warm-up", file=sys.stderr)
    with local_stack(settings) as running:
        stamp = int(time.time())
        demo = running.model_copy(
            update={
                "redis_prefix": f"recstream-demo-{stamp}:",
                "topic_prefix": f"recstream-demo-{stamp}.",
                "app_id": f"recstream-demo-{stamp}",
                "data_dir": running.data_dir / f"demo-{stamp}",
                "api_port": free_port(),
                "insecure_open": True,  # on 127.0.0.1, for the demo's own requests
                "log_level": "warning",
            }
        )
        ensure_topics(demo)
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for command in ("worker", "trainer", "api"):
                processes.append(spawn(command, demo, demo.data_dir / f"{command}.log"))
            live, ingest = asyncio.run(_live(demo, events, warmup))
        finally:
            for process in processes:
                stop(process)
            with blocking_redis_client(demo) as client:
                delete_prefixed(client, demo.redis_prefix)
    offline = _offline(demo, events, options.warmup)
    figures = figures_json(live, offline, ingest, len(events))
    print(render(figures))
    if options.json_out is not None:
        options.json_out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0
