"""Entry point of an ingest worker process."""

from __future__ import annotations

import faust

from stream.config import Settings
from stream.events.topics import ensure_topics
from stream.ingest.app import create_worker_app
from stream.ingest.metrics import WorkerMetrics
from stream.startup import serve_metrics, start_process


def run_worker(settings: Settings) -> None:
    """Create missing topics, then run the Faust ingest worker until SIGTERM/SIGINT."""
    start_process(settings)
    ensure_topics(settings)
    metrics = WorkerMetrics.create()
    serve_metrics(metrics.registry, settings.worker_metrics_port)
    app = create_worker_app(settings, metrics)
    worker = faust.Worker(app, loglevel=settings.log_level, redirect_stdouts=False)
    worker.execute_from_commandline()
