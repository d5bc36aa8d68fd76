"""Prometheus metrics of an ingest worker, served on its own port."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.startup import LATENCY_BUCKETS


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """What an ingest worker counts."""

    registry: CollectorRegistry
    events: Counter
    dead_letters: Counter
    freshness: Histogram
    user_vectors: Counter
    lag: Gauge
    redis_retries: Counter

    @classmethod
    def create(cls) -> WorkerMetrics:
        registry = CollectorRegistry()
        return cls(
            registry,
            Counter("recstream_events_processed", "events applied (new ones)", registry=registry),
            Counter("recstream_dead_letters", "messages sent to the DLQ", registry=registry),
            Histogram(
                "recstream_freshness_seconds",
                "event produced -> the user's vector for recommendations written",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            Counter("recstream_user_vectors", "user vectors written", registry=registry),
            Gauge(
                "recstream_consumer_lag",
                "messages behind the end of this worker's partitions",
                registry=registry,
            ),
            Counter(
                "recstream_redis_retries",
                "Redis calls retried: Redis away, timing out or refusing (OOM, READONLY, ...)",
                ["error"],
                registry=registry,
            ),
        )
