"""A full disk while the trainer checkpoints (a file-size limit makes every large write fail
with EFBIG): a clear error, the previous version kept and served, nothing learned twice once
the disk has room again."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from model.checkpoints import CheckpointStore
from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.samples import sample_events
from stream.local.processes import settings_env, stop
from tests.conftest import Processes, wait_until
from tests.faults.conftest import events_learned

pytestmark = pytest.mark.integration


def _trainer_with_file_limit(settings: Settings, limit: int, log: Path) -> subprocess.Popen[bytes]:
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stream", "trainer"],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limited,  # a file-size limit for this child only
        )


def test_a_full_disk_while_checkpointing_keeps_the_last_version(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"vector_dim": 32, "publish_interval_s": 0.3})
    events = list(sample_events(1_000, users=100, items=150, seed=51))
    checkpoints = CheckpointStore(settings.checkpoint_dir)
    processes = Processes()
    with EventProducer(settings) as producer:
        for event in events[:500]:
            producer.send(event)
        producer.flush()
        trainer = processes.start("trainer", settings)
        wait_until(lambda: events_learned(settings) == 500, 60, "500 events learned")
        stop(trainer)
        kept = checkpoints.current()
        assert kept is not None
        size = checkpoints.directory.joinpath(f"checkpoint-{kept:08d}.pt").stat().st_size

        log = tmp_path / "trainer-full-disk.log"
        full = _trainer_with_file_limit(settings, size // 2, log)
        try:
            for event in events[500:]:
                producer.send(event)
            producer.flush()
            wait_until(lambda: "model version not published" in log.read_text(), 60, "the error")
            assert full.poll() is None, "the trainer keeps running"
            assert checkpoints.current() == kept
            assert events_learned(settings) == 500, "the last written version is still served"
            assert not list(checkpoints.directory.glob("*.partial"))
            assert f"version {kept} stays current" in log.read_text()
        finally:
            stop(full)

    processes.start("trainer", settings)  # the disk has room again
    try:
        wait_until(lambda: events_learned(settings) == 1_000, 60, "the rest learned once")
    finally:
        processes.stop_all()
