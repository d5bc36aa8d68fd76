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
    make_worker(create_worker_app(settings, metrics), settings).execute_from_commandline()


def make_worker(app: faust.App, settings: Settings) -> faust.Worker:
    """A Faust worker for `app` that logs at `settings.log_level`. Without its start-up
    spinner: Faust sets the root logger to DEBUG for it and never back, so every debug call
    of aiokafka and Faust would build a record that no handler prints."""
    worker = faust.Worker(app, loglevel=settings.log_level, redirect_stdouts=False)
    worker.spinner = None
    return worker
