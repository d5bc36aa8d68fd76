"""One trainer per model: a second trainer (a rolling deploy, a second `compose up`) waits for
the lease, and says so, while the first publishes; the served version never goes back; when
the first dies the second takes over within the lease and continues the versions."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from store.redis_keys import RedisKeys
from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.samples import sample_events
from tests.conftest import Processes, wait_until
from tests.faults.conftest import events_learned

pytestmark = pytest.mark.integration


def test_a_second_trainer_waits_for_the_lease_and_takes_over_when_the_first_dies(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={"trainer_lease_s": 2.0, "publish_interval_s": 0.3, "vector_dim": 32}
    )
    events = list(sample_events(1_500, users=120, items=200, seed=46))
    client = redis.Redis.from_url(settings.redis_url)
    key = RedisKeys(settings.keys_prefix).model_version

    def served() -> int:
        return int(client.get(key) or 0)

    processes = Processes()
    try:
        first = processes.start("trainer", settings)
        with EventProducer(settings) as producer:
            for event in events[:1_000]:
                producer.send(event)
            producer.flush()
            wait_until(lambda: events_learned(settings) == 1_000, 90, "1,000 events learned")
            processes.start("trainer", settings)
            seen = [served()]
            for event in events[1_000:1_200]:
                producer.send(event)
            producer.flush()
            until = time.monotonic() + 5.0
            while time.monotonic() < until:
                seen.append(served())
                time.sleep(0.05)
            assert seen == sorted(seen), "the served version went back"
            second_log = Path(settings.data_dir) / "trainer-1.log"
            assert "holds this model's lease" in second_log.read_text()
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            before = served()
            for event in events[1_200:]:
                producer.send(event)
            producer.flush()
            wait_until(lambda: events_learned(settings) == 1_500, 90, "the second trainer")
        assert served() > before
    finally:
        client.close()
        processes.stop_all()
