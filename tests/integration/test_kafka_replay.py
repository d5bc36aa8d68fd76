"""`recstream replay --from-kafka`: a time range re-applied through the handlers changes nothing."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer

from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.samples import sample_events
from stream.events.topics import TopicNames, ensure_topics
from stream.ops.replay_kafka import replay_kafka
from tests.conftest import Spawner, ingest_counts, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(each_redis: str) -> str:
    """Every test here runs against one Redis and against a Redis Cluster."""
    return each_redis


def test_a_replayed_time_range_is_seen_as_duplicates_and_only_that_range(
    settings: Settings, start_worker: Spawner
) -> None:
    events = list(sample_events(150, seed=9))
    start_worker()
    with EventProducer(settings) as producer:
        for event in events[:100]:
            producer.send(event)
        producer.flush()
        time.sleep(1.0)
        since_ms = int(time.time() * 1000)
        time.sleep(0.2)
        for event in events[100:]:
            producer.send(event)
        producer.flush()
    wait_until(lambda: ingest_counts(settings).get("applied") == 150, 60, "150 events applied")
    before = ingest_counts(settings)
    summary = replay_kafka(settings, since_ms, progress=False)
    assert (summary.messages, summary.applied, summary.duplicates) == (50, 0, 50)
    everything = replay_kafka(settings, 0, progress=False)
    assert (everything.messages, everything.applied) == (150, 0)
    after = ingest_counts(settings)
    assert after["applied"] == before["applied"] == 150


def test_impossible_ranges_and_unknown_topics_are_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="impossible time range"):
        replay_kafka(settings, 2_000, 1_000, progress=False)
    with pytest.raises(ValueError, match="no such topic"):
        replay_kafka(settings, 0, topics=["nope-not-a-topic"], progress=False)
    with pytest.raises(ValueError, match="rate must be positive"):
        replay_kafka(settings, 0, rate=0, progress=False)


def test_a_dry_run_reads_and_counts_but_applies_nothing(settings: Settings) -> None:
    ensure_topics(settings)
    with EventProducer(settings) as producer:
        for event in sample_events(40, seed=12):
            producer.send(event)
        producer.flush()
    summary = replay_kafka(settings, 0, dry_run=True, progress=False)
    assert (summary.messages, summary.applied, summary.invalid) == (40, 0, 0)
    assert "dry run" in summary.render()
    assert ingest_counts(settings).get("applied") is None


def test_a_range_older_than_the_idempotency_horizon_is_refused_unless_asked_for(
    settings: Settings,
) -> None:
    """Idempotency records last RECSTREAM_DEDUP_TTL_S: messages appended before that could
    count twice, so the replay says how many and applies nothing without --past-horizon."""
    settings = settings.model_copy(update={"dedup_ttl_s": 3_600})
    ensure_topics(settings)
    topics = TopicNames.from_settings(settings)
    now_ms = int(time.time() * 1000)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        for n, event in enumerate(sample_events(30, seed=13)):
            old = n < 10  # appended two hours ago, as far as the log's timestamps say
            producer.send(
                topics.clicks if event.type == "click" else topics.orders,
                event.to_json(),
                timestamp_ms=now_ms - (7_200_000 if old else 0),
            )
        producer.flush()
    finally:
        producer.close()
    with pytest.raises(ValueError, match="10 messages of the range were appended more than"):
        replay_kafka(settings, 0, progress=False)
    assert ingest_counts(settings).get("applied") is None
    recent = replay_kafka(settings, now_ms - 60_000, progress=False)  # within the horizon
    assert (recent.messages, recent.applied, recent.past_horizon) == (20, 20, 0)
    forced = replay_kafka(settings, 0, progress=False, past_horizon=True)
    assert (forced.messages, forced.applied, forced.past_horizon) == (30, 10, 10)
    assert "may have counted twice" in forced.render()
