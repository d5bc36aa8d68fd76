"""Prometheus metrics of the worker and trainer processes, served on their own port."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

FRESHNESS_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def serve(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
    """Expose `registry` on `port` (0: not at all); a taken port is logged, not fatal."""
    if port == 0:
        return
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        log.error("metrics port %d unavailable (%s); metrics are not served", port, error)


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """What an ingest worker counts."""

    registry: CollectorRegistry
    events: Counter
    dead_letters: Counter
    freshness: Histogram
    user_vectors: Counter
    lag: Gauge

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
                buckets=FRESHNESS_BUCKETS,
                registry=registry,
            ),
            Counter("recstream_user_vectors", "user vectors written", registry=registry),
            Gauge(
                "recstream_consumer_lag",
                "messages behind the end of this worker's partitions",
                registry=registry,
            ),
        )


@dataclass(frozen=True, slots=True)
class TrainerMetrics:
    """What the trainer counts."""

    registry: CollectorRegistry
    events: Counter
    duplicates: Counter
    loss: Gauge
    model_version: Gauge
    publish: Histogram
    lag: Gauge
    save_failures: Counter

    @classmethod
    def create(cls) -> TrainerMetrics:
        registry = CollectorRegistry()
        return cls(
            registry,
            Counter("recstream_trainer_events", "events learned", registry=registry),
            Counter("recstream_trainer_duplicates", "duplicate events skipped", registry=registry),
            Gauge("recstream_trainer_loss", "loss of the last training step", registry=registry),
            Gauge("recstream_model_version", "last published model version", registry=registry),
            Histogram(
                "recstream_publish_seconds",
                "checkpoint + item vectors + feed entry of one model version",
                buckets=FRESHNESS_BUCKETS,
                registry=registry,
            ),
            Gauge(
                "recstream_trainer_lag",
                "messages the trainer has not learned yet",
                registry=registry,
            ),
            Counter(
                "recstream_checkpoint_failures",
                "model versions that could not be written (full disk); retried",
                registry=registry,
            ),
        )
