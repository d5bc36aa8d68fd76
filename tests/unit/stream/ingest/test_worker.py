"""The ingest worker's process setup."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.config import Settings
from stream.ingest.app import create_worker_app
from stream.ingest.worker import make_worker


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Faust configures the root logger: put it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_the_worker_logs_at_its_level_and_makes_no_records_below_it(
    tmp_path: Path, root_logging: None
) -> None:
    """Faust's start-up spinner sets the root logger to DEBUG for good, so every debug call
    of aiokafka and Faust built a record (a twentieth of the worker's CPU at 500 events/s)
    that no handler printed."""
    settings = Settings(data_dir=tmp_path, log_level="warning")
    worker = make_worker(create_worker_app(settings), settings)
    worker._setup_logging()  # what the worker does first when it starts
    assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("stream.ingest").isEnabledFor(logging.WARNING)
