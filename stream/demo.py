"""`recstream demo`: stack + worker, a sample stream through Kafka, and the state it produced."""

from __future__ import annotations

import asyncio
import sys
import time

import redis
import redis.asyncio as aioredis
from tqdm import tqdm

from store.interaction_store import RedisInteractionStore
from store.redis_keys import RedisKeys, delete_prefixed
from stream.config import Settings
from stream.events import ClickEvent, OrderEvent
from stream.processes import spawn, stop
from stream.producer import EventProducer
from stream.sample_events import sample_events
from stream.stack import local_stack
from stream.topics import TopicNames, ensure_topics

_INVALID = (
    b'{"type": "click", "event_id": "bad-1", "user_id": "u", "ts": "yesterday", "item_id": "x"}',
    b'{"type": "view", "event_id": "bad-2", "user_id": "u", "ts": 1767225600000}',
    b"not json at all",
)


async def _wait_for(store: RedisInteractionStore, expected: int, timeout_s: float) -> float:
    """Seconds from the first to the last of `expected` messages applied or dead-lettered."""
    start = time.monotonic()
    first: float | None = None
    with tqdm(total=expected, desc="applied", unit="ev", file=sys.stderr, mininterval=0.5) as bar:
        while time.monotonic() - start < timeout_s:
            stats = await store.stats()
            done = stats.applied + stats.dead_lettered
            first = first or (time.monotonic() if done else None)
            bar.update(done - bar.n)
            if done >= expected and first is not None:
                return time.monotonic() - first
            await asyncio.sleep(0.02)
    raise TimeoutError(f"only {bar.n} of {expected} events applied after {timeout_s:.0f}s")


async def _report(store: RedisInteractionStore, user_id: str, seconds: float, n: int) -> None:
    stats = await store.stats()
    print(
        f"\n{n} events applied in {seconds:.2f}s from first to last ({n / seconds:,.0f} events/s)"
    )
    print(
        f"applied {stats.applied}, duplicates skipped {stats.duplicates}, "
        f"dead-lettered {stats.dead_lettered}"
    )
    print(
        "\ntop items by clicks:  "
        + ", ".join(f"{i} ({s:.0f})" for i, s in await store.top_items("clicks", 5))
    )
    print(
        "top items by orders:  "
        + ", ".join(f"{i} ({s:.0f})" for i, s in await store.top_items("orders", 5))
    )
    print(f"\n{user_id}: last interactions")
    for entry in await store.history(user_id, limit=5):
        print(f"  {entry.kind:5s} {entry.item_id}  at {entry.ts_ms}")
    print(f"{user_id}: purchased {sorted(await store.purchased(user_id))[:10]}")


def _produce(settings: Settings, events: list[ClickEvent | OrderEvent]) -> None:
    with EventProducer(settings) as producer:
        for event in tqdm(events, desc="produce", unit="ev", file=sys.stderr, mininterval=0.5):
            producer.send(event)
        for payload in _INVALID:
            producer.send_raw(TopicNames.from_settings(settings).clicks, payload, b"u")
        producer.flush()


async def _stream_and_report(settings: Settings, events: int) -> None:
    client = aioredis.from_url(settings.redis_url)
    try:
        store = RedisInteractionStore(client, RedisKeys(settings.redis_prefix))
        stream = list(sample_events(events, seed=7))
        _produce(settings, stream)
        seconds = await _wait_for(store, len(stream) + len(_INVALID), timeout_s=300)
        await _report(store, stream[-1].user_id, seconds, len(stream))
    finally:
        await client.aclose()


def run_demo(settings: Settings, events: int = 20_000) -> int:
    """Start what is needed, stream `events` sample events (+3 invalid ones), print the state."""
    with local_stack(settings) as running:
        demo = running.model_copy(
            update={
                "redis_prefix": "recstream-demo:",
                "topic_prefix": f"recstream-demo-{int(time.time())}.",
                "app_id": "recstream-demo",
            }
        )
        with redis.Redis.from_url(demo.redis_url) as sync_client:
            delete_prefixed(sync_client, demo.redis_prefix)
        ensure_topics(demo)
        worker = spawn("worker", demo, demo.data_dir / "demo-worker.log")
        try:
            asyncio.run(_stream_and_report(demo, events))
        finally:
            stop(worker)
    return 0
