"""The event backbone end to end: SDK -> broker -> Faust worker -> Redis effects / dead letters."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import signal
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from kafka import KafkaProducer

from store.interaction_store import IngestStats, RedisInteractionStore
from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.samples import sample_events
from stream.events.schema import ClickEvent, OrderEvent
from stream.events.topics import TopicNames, ensure_topics
from stream.wiring import redis_client, redis_keys
from tests.conftest import Processes, Spawner, read_topic, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(each_redis: str) -> str:
    """Every test here runs against one Redis and against a Redis Cluster."""
    return each_redis


_INVALID_PAYLOADS = [
    b"{not json",
    b'{"type": "view", "event_id": "x", "user_id": "u", "ts": 1767225600000}',
    b'{"type": "click", "event_id": "x", "user_id": "u", "ts": "yesterday", "item_id": "i"}',
    b'{"type": "order", "event_id": "x", "user_id": "u", "ts": 1767225600000, "order_id": "o",'
    b' "items": [{"item_id": "i", "quantity": 0}]}',
    b'{"type": "click", "user_id": "u", "ts": 1767225600000, "item_id": "i"}',
    b"\xff\xfe binary",
]


@dataclass
class Expected:
    """What Redis must hold after a stream: computed in the test, independently of the code."""

    clicks: Counter[str] = field(default_factory=Counter)
    orders: Counter[str] = field(default_factory=Counter)
    units: Counter[str] = field(default_factory=Counter)
    purchased: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    history: dict[str, Counter[tuple[str, str, int]]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    applied: int = 0

    def add(self, event: ClickEvent | OrderEvent) -> None:
        self.applied += 1
        if isinstance(event, ClickEvent):
            self.clicks[event.item_id] += 1
            self.history[event.user_id][(event.item_id, "click", event.ts_ms)] += 1
            return
        for item_id in {line.item_id for line in event.items}:
            self.orders[item_id] += 1
        for line in event.items:
            self.units[line.item_id] += line.quantity
            self.purchased[event.user_id].add(line.item_id)
            self.history[event.user_id][(line.item_id, "order", event.ts_ms)] += 1


def _store(client: aioredis.Redis, settings: Settings) -> RedisInteractionStore:
    return RedisInteractionStore(client, redis_keys(settings))


def history_items(settings: Settings, user_id: str) -> list[str]:
    """The items of the user's history as Redis holds it, newest first."""

    async def read() -> list[str]:
        client = redis_client(settings)
        try:
            return [h.item_id for h in await _store(client, settings).history(user_id)]
        finally:
            await client.aclose()

    return asyncio.run(read())


def stats_of(settings: Settings) -> IngestStats:
    async def read() -> IngestStats:
        client = redis_client(settings)
        try:
            return await _store(client, settings).stats()
        finally:
            await client.aclose()

    return asyncio.run(read())


def assert_state_matches(settings: Settings, expected: Expected) -> None:
    async def check() -> None:
        client = redis_client(settings)
        try:
            store = _store(client, settings)
            assert dict(await store.top_items("clicks", None)) == dict(expected.clicks)
            assert dict(await store.top_items("orders", None)) == dict(expected.orders)
            assert dict(await store.top_items("units", None)) == dict(expected.units)
            for user_id, interactions in expected.history.items():
                history = await store.history(user_id)
                assert Counter((h.item_id, h.kind, h.ts_ms) for h in history) == interactions
                assert await store.purchased(user_id) == expected.purchased.get(user_id, set())
        finally:
            await client.aclose()

    asyncio.run(check())


def _stream(n: int, seed: int) -> list[ClickEvent | OrderEvent]:
    # 300 equally active users keep every history under the 200-entry cap, so histories
    # compare exactly (a user's clicks and orders arrive on different topics).
    return list(sample_events(n, users=300, items=500, user_skew=0.0, seed=seed))


def test_each_valid_unique_event_has_exactly_one_effect_and_invalid_ones_are_dead_lettered(
    settings: Settings, start_worker: Spawner
) -> None:
    rng = random.Random(1)
    events = _stream(10_000, seed=1)
    duplicates = rng.sample(events, k=500)
    invalid = [rng.choice(_INVALID_PAYLOADS) for _ in range(200)]
    expected = Expected()
    for event in events:
        expected.add(event)

    ensure_topics(settings)
    start_worker()
    topics = TopicNames.from_settings(settings)
    with EventProducer(settings) as producer:
        for event in events:
            producer.send(event)
        for event in duplicates:
            producer.send(event)
        for payload in invalid:
            producer.send_raw(topics.clicks, payload, key=b"bad-user")
        producer.flush()

    wait_until(
        lambda: (s := stats_of(settings)).applied + s.duplicates + s.dead_lettered >= 10_700,
        timeout_s=120,
        what="10,000 events applied, 500 duplicates skipped and 200 dead-lettered",
    )
    stats = stats_of(settings)
    assert stats.applied == len(events)
    assert stats.duplicates == len(duplicates)
    assert stats.dead_lettered == len(invalid)
    assert_state_matches(settings, expected)

    letters = read_topic(settings.kafka_bootstrap, topics.dlq, expected=len(invalid))
    assert len(letters) == len(invalid)
    assert Counter(base64.b64decode(letter["payload_b64"]) for letter in letters) == Counter(
        invalid
    )
    for letter in letters:
        assert letter["reason"]
        assert letter["topic"] == topics.clicks
        assert isinstance(letter["partition"], int)
        assert isinstance(letter["offset"], int)


def test_worker_killed_mid_stream_and_restarted_keeps_totals_exact(
    settings: Settings, start_worker: Spawner
) -> None:
    events = _stream(10_000, seed=2)
    expected = Expected()
    for event in events:
        expected.add(event)
    ensure_topics(settings)
    worker = start_worker()
    with EventProducer(settings) as producer:
        for event in events[:6_000]:
            producer.send(event)
        producer.flush()
        wait_until(lambda: stats_of(settings).applied >= 2_000, 60, "the worker to be mid-stream")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        applied_at_kill = stats_of(settings).applied
        for event in events[6_000:]:
            producer.send(event)
        producer.flush()
    assert applied_at_kill < len(events)
    start_worker()
    wait_until(lambda: stats_of(settings).applied >= len(events), 120, "every event applied")
    assert stats_of(settings).applied == len(events)
    assert_state_matches(settings, expected)


def test_raw_json_from_a_plain_kafka_client_is_consumed(
    settings: Settings, start_worker: Spawner
) -> None:
    ensure_topics(settings)
    topics = TopicNames.from_settings(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    click = {
        "type": "click",
        "event_id": "raw-1",
        "user_id": "alice",
        "ts": "2026-03-01T12:00:00+01:00",
        "item_id": "sku-9",
        "session_id": "s1",
        "context": {"page": "home", "position": 3},
    }
    order = {
        "type": "order",
        "event_id": "raw-2",
        "user_id": "alice",
        "ts": 1772366400000,
        "order_id": "o-1",
        "items": [{"item_id": "sku-9", "quantity": 2, "price": 19.9}],
    }
    producer.send(topics.clicks, json.dumps(click).encode(), key=b"alice")
    producer.send(topics.orders, json.dumps(order).encode(), key=b"alice")
    producer.flush()
    producer.close()
    start_worker()
    wait_until(lambda: stats_of(settings).applied >= 2, 60, "both raw events applied")

    expected = Expected()
    expected.add(ClickEvent.model_validate(click))
    expected.add(OrderEvent.model_validate(order))
    assert_state_matches(settings, expected)
    assert stats_of(settings).dead_lettered == 0


def test_events_from_the_future_or_past_the_horizon_are_dead_lettered_with_the_reason(
    settings: Settings,
) -> None:
    """A click dated 2099 would top trending for ever and head its user's history."""
    settings = settings.model_copy(update={"max_event_age_s": 365 * 86_400.0})
    now = datetime.now(UTC)
    times = {
        "ok-recent": now - timedelta(days=2),
        "ok-skewed": now + timedelta(minutes=2),  # a producer clock a little ahead
        "future-hour": now + timedelta(hours=1),
        "future-2099": datetime(2099, 1, 1, tzinfo=UTC),
        "too-old": now - timedelta(days=800),
    }
    ensure_topics(settings)
    processes = Processes()
    processes.start("worker", settings)
    try:
        _send_and_check_times(settings, times)
    finally:
        processes.stop_all()


def _send_and_check_times(settings: Settings, times: dict[str, datetime]) -> None:
    topics = TopicNames.from_settings(settings)
    with EventProducer(settings) as producer:  # raw: the producer's own checks bypassed
        for name, ts in times.items():
            event = ClickEvent(event_id=name, user_id="u-time", ts=ts, item_id=f"i-{name}")
            producer.send_raw(topics.clicks, event.to_json(), key=b"u-time")
        producer.flush()
    letters = read_topic(settings.kafka_bootstrap, topics.dlq, expected=3, timeout_s=60)
    reasons = {json.loads(letter["payload"])["event_id"]: letter["reason"] for letter in letters}
    assert set(reasons) == {"future-hour", "future-2099", "too-old"}
    assert "ahead of its arrival" in reasons["future-hour"]
    assert "RECSTREAM_MAX_CLOCK_SKEW_S" in reasons["future-2099"]
    assert "RECSTREAM_MAX_EVENT_AGE_S" in reasons["too-old"]
    wait_until(lambda: stats_of(settings).applied == 2, 30, "the two good events applied")
    assert sorted(history_items(settings, "u-time")) == ["i-ok-recent", "i-ok-skewed"]


def test_an_event_id_sent_again_with_other_content_is_dead_lettered_as_a_conflict(
    settings: Settings,
) -> None:
    """Idempotency is per event_id: the first content is kept, whatever time the second has."""
    now = datetime.now(UTC)
    first = ClickEvent(event_id="c1", user_id="u-c", ts=now, item_id="a")
    events = [
        first,
        first,  # the same event again: a silent duplicate
        ClickEvent(event_id="c1", user_id="u-c", ts=now - timedelta(hours=5), item_id="a"),
        ClickEvent(event_id="c1", user_id="u-c", ts=now, item_id="b"),
    ]
    topics = TopicNames.from_settings(settings)
    ensure_topics(settings)
    processes = Processes()
    processes.start("worker", settings)
    try:
        with EventProducer(settings) as producer:
            for event in events:
                producer.send_raw(topics.clicks, event.to_json(), key=b"u-c")
            producer.flush()
        letters = read_topic(settings.kafka_bootstrap, topics.dlq, expected=2, timeout_s=60)
        wait_until(lambda: stats_of(settings).duplicates == 1, 30, "the duplicate skipped")
    finally:
        processes.stop_all()
    assert [letter["reason"].split(":")[0] for letter in letters] == ["conflict", "conflict"]
    assert stats_of(settings).applied == 1
    assert history_items(settings, "u-c") == ["a"]
