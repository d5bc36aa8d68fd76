"""Prometheus metrics of the trainer, served on its own port."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.startup import LATENCY_BUCKETS


@dataclass(frozen=True, slots=True)
class TrainerMetrics:
    """What the trainer counts."""

    registry: CollectorRegistry
    events: Counter
    duplicates: Counter
    skipped: Counter
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
            Counter(
                "recstream_trainer_skipped",
                "events skipped because learning them raised (see the trainer's log)",
                registry=registry,
            ),
            Gauge("recstream_trainer_loss", "loss of the last training step", registry=registry),
            Gauge("recstream_model_version", "last published model version", registry=registry),
            Histogram(
                "recstream_publish_seconds",
                "checkpoint + item vectors + feed entry of one model version",
                buckets=LATENCY_BUCKETS,
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
