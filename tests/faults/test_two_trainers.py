"""One trainer per model: a second trainer (a rolling deploy, a second `compose up`) waits for
the lease, and says so, while the first publishes; the served version never goes back; when
the first dies the second takes over within the lease and continues the versions."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from model.checkpoints import CheckpointStore
from store.redis_keys import RedisKeys
from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.samples import sample_events
from stream.training.loop import train
from tests.conftest import Processes, produce, wait_until
from tests.faults.conftest import events_learned, served_version

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
            second_log = Path(settings.data_dir) / "trainer-1.log"

            def second_waits() -> bool:
                """Watching the served version until the second trainer says it waits: its
                start (imports, freeze) can take longer than the 5 s above on a slow box."""
                seen.append(served())
                return "holds this model's lease" in second_log.read_text()

            wait_until(second_waits, 60, "the second trainer reporting the lease it waits for")
            assert seen == sorted(seen), "the served version went back"
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


def _crashed_between_full_states(settings: Settings, events: list[Any]) -> int:
    """A trainer that learns `events` in two versions, the full state in the first only, then
    dies (its task cancelled: no final full state); returns the version Redis serves then."""
    half = len(events) // 2

    async def crash() -> None:
        task = asyncio.create_task(train(settings, asyncio.Event()))
        for learned in (half, len(events)):  # one version each: the first with the full state
            await asyncio.to_thread(produce, settings, events[learned - half : learned])
            learned_all = partial(lambda n: events_learned(settings) >= n, learned)
            await asyncio.to_thread(wait_until, learned_all, 60, f"{learned} events learned")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(crash(), 90))
    assert CheckpointStore(settings.checkpoint_dir).versions() == [1]
    return served_version(settings)


def _slow_full_saves(monkeypatch: pytest.MonkeyPatch, seconds: float, then: Any = None) -> None:
    """Every save of a full state takes `seconds` longer (a big model, a slow disk), then
    calls `then()`."""
    save = CheckpointStore.save

    def slow(self: CheckpointStore, *args: Any, full: bool = False, **kwargs: Any) -> int:
        if full:
            time.sleep(seconds)
            if then is not None:
                then()
        return save(self, *args, full=full, **kwargs)

    monkeypatch.setattr(CheckpointStore, "save", slow)


def test_a_takeover_whose_republish_outlasts_the_lease_keeps_the_lease_and_goes_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking over after a crash between full states republishes the last full state as a
    new version; the lease is kept while that (or any) publish runs, however long it takes,
    so the trainer goes on learning instead of dying of a fence it let expire."""
    settings = settings.model_copy(
        update={
            "trainer_lease_s": 0.6,
            "publish_interval_s": 0.2,
            "checkpoint_state_s": 3_600.0,
            "vector_dim": 16,
        }
    )
    events = list(sample_events(600, users=60, items=80, seed=47))
    crashed_at = _crashed_between_full_states(settings, events[:400])
    _slow_full_saves(monkeypatch, seconds=1.5)

    async def take_over() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(train(settings, stop))
        await asyncio.to_thread(produce, settings, events[400:])
        while (await asyncio.to_thread(events_learned, settings)) < len(events):
            if task.done():
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task  # raises what ended the trainer, if anything did

    asyncio.run(asyncio.wait_for(take_over(), 90))
    assert events_learned(settings) == len(events)
    assert served_version(settings) > crashed_at + 1


def test_a_takeover_that_loses_the_lease_while_it_republishes_gives_way(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another trainer takes the lease while the republish runs, the republish is
    fenced off: nothing is served from it, and the trainer returns (to wait for the lease
    again) instead of dying."""
    settings = settings.model_copy(
        update={"trainer_lease_s": 0.6, "checkpoint_state_s": 3_600.0, "vector_dim": 16}
    )
    events = list(sample_events(400, users=60, items=80, seed=48))
    crashed_at = _crashed_between_full_states(settings, events)
    lease_key = RedisKeys(settings.keys_prefix).control.trainer_lease
    client = redis.Redis.from_url(settings.redis_url)

    def taken_by_another() -> None:
        client.set(lease_key, "999 another:1", px=60_000)

    _slow_full_saves(monkeypatch, seconds=0.1, then=taken_by_another)
    try:
        asyncio.run(asyncio.wait_for(train(settings, asyncio.Event()), 60))
        assert served_version(settings) == crashed_at
        assert client.get(lease_key) == b"999 another:1"
    finally:
        client.close()
