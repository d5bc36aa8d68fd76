"""Entry point of an ingest worker process."""

from __future__ import annotations

import logging

import faust
import torch

from stream.config import Settings
from stream.heap import start_heap_trimmer
from stream.ingest_app import create_ingest_app
from stream.process_metrics import WorkerMetrics, serve
from stream.topics import ensure_topics


def run_worker(settings: Settings) -> None:
    """Create missing topics, then run the Faust ingest worker until SIGTERM/SIGINT."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    torch.set_num_threads(settings.torch_threads)
    start_heap_trimmer(settings.heap_trim_s)
    ensure_topics(settings)
    metrics = WorkerMetrics.create()
    serve(metrics.registry, settings.worker_metrics_port)
    app = create_ingest_app(settings, metrics)
    worker = faust.Worker(app, loglevel=settings.log_level, redirect_stdouts=False)
    worker.execute_from_commandline()
