"""Redis restarted empty (state rebuilt from the log and the checkpoints, the API answering
from its cached popular items meanwhile), Redis restored from an older snapshot (the worker
re-reads what it lost by itself) and Redis frozen (requests time out into the same fallback
instead of piling up)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from stream.api.app import create_api
from stream.config import Settings
from stream.events.handlers import effect_of
from stream.events.producer import EventProducer
from stream.events.samples import sample_events
from stream.ops.replay_kafka import replay_kafka
from stream.wiring import interaction_store
from tests.conftest import Processes, ingest_counts, isolated_settings, wait_until
from tests.faults.conftest import ApiPoller, PrivateRedis, events_learned

pytestmark = pytest.mark.integration


def _settings(kafka_bootstrap: str, server: PrivateRedis, data_dir: Path) -> Settings:
    return isolated_settings(kafka_bootstrap, server.url, data_dir).model_copy(
        update={"vector_dim": 32, "publish_interval_s": 0.3, "redis_timeout_s": 0.3}
    )


def test_redis_restarted_empty_is_rebuilt_from_the_log_and_checkpoints(
    kafka_bootstrap: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, private_redis, tmp_path / "data")
    events = list(sample_events(1_700, users=150, items=200, seed=41))
    user = events[0].user_id
    processes = Processes()
    try:
        processes.start("worker", settings)
        processes.start("trainer", settings)
        with TestClient(create_api(settings)) as api, EventProducer(settings) as producer:
            for event in events[:1_500]:
                producer.send(event)
            producer.flush()
            wait_until(lambda: events_learned(settings) == 1_500, 90, "1,500 events learned")
            wait_until(lambda: ingest_counts(settings).get("applied") == 1_500, 60, "applied")
            wait_until(
                lambda: (
                    api.get(f"/v1/users/{user}/recommendations").json()["source"] == "personalized"
                ),
                30,
                "personalised answers",
            )
            with ApiPoller(api, user) as poll:
                private_redis.stop()  # Redis crashes and loses everything
                for event in events[1_500:]:
                    producer.send(event)  # accepted by the log meanwhile
                producer.flush()
                time.sleep(2.0)
                degraded = dict(poll.sources)
                private_redis.restart_empty()
                replay_kafka(settings, since_ms=0, progress=False)  # the ops step: histories
                wait_until(lambda: events_learned(settings) == 1_700, 90, "the model republished")
                wait_until(
                    lambda: ingest_counts(settings).get("applied") == 1_700, 60, "1,700 applied"
                )
            assert set(poll.statuses) == {200}, poll.statuses
            assert degraded.get("popular_cached", 0) > 5, degraded
            answer = api.get(f"/v1/users/{user}/recommendations").json()
            assert answer["source"] == "personalized", answer
    finally:
        processes.stop_all()


def test_a_frozen_redis_times_requests_out_into_the_fallback_instead_of_piling_up(
    kafka_bootstrap: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, private_redis, tmp_path / "data")
    events = list(sample_events(300, users=50, items=100, seed=42))
    processes = Processes()
    try:
        processes.start("worker", settings)
        with TestClient(create_api(settings)) as api, EventProducer(settings) as producer:
            for event in events:
                producer.send(event)
            producer.flush()
            wait_until(lambda: ingest_counts(settings).get("applied") == 300, 60, "300 applied")
            assert api.get(f"/v1/users/{events[0].user_id}/recommendations").status_code == 200
            os.kill(private_redis.pid, signal.SIGSTOP)
            try:
                frozen_until = time.monotonic() + 4.0
                answers = []
                while time.monotonic() < frozen_until - 1.0:
                    answer = api.get(f"/v1/users/{events[0].user_id}/recommendations")
                    answers.append((answer.status_code, answer.json()["source"]))
                answered_while_frozen = len(answers)
                ready = api.get("/readyz").status_code
            finally:
                os.kill(private_redis.pid, signal.SIGCONT)
        assert answered_while_frozen >= 3  # each waited one timeout, not for Redis
        assert set(answers) == {(200, "popular_cached")}
        assert ready == 503
    finally:
        processes.stop_all()


def _effects_in(settings: Settings, users: list[str]) -> tuple[dict[str, int], dict[str, float]]:
    """Each user's history length and each item's clicks, as Redis holds them."""

    async def read() -> tuple[dict[str, int], dict[str, float]]:
        client = aioredis.from_url(settings.redis_url)
        try:
            store = interaction_store(settings, client)
            histories = await store.histories(users, settings.history_len)
            clicks = dict(await store.top_items("clicks", None))
            return {u: len(h) for u, h in histories.items()}, clicks
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_redis_restored_from_an_older_snapshot_gets_back_what_it_lost_with_no_operator_step(
    kafka_bootstrap: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, private_redis, tmp_path / "data")
    events = list(sample_events(700, users=60, items=120, seed=43))
    processes = Processes()
    try:
        processes.start("worker", settings)
        with EventProducer(settings) as producer:
            for event in events[:300]:
                producer.send(event)
            producer.flush()
            wait_until(lambda: ingest_counts(settings).get("applied") == 300, 60, "300 applied")
            private_redis.snapshot()  # holds the first 300
            for event in events[300:600]:
                producer.send(event)
            producer.flush()
            wait_until(lambda: ingest_counts(settings).get("applied") == 600, 60, "600 applied")
            time.sleep(settings.commit_interval_s * 3)  # Kafka's offsets now past all 600
            private_redis.crash_and_restore()  # back to the first 300; no new event comes
            wait_until(lambda: ingest_counts(settings).get("applied") == 600, 60, "re-applied")
            for event in events[600:]:
                producer.send(event)
            producer.flush()
            wait_until(lambda: ingest_counts(settings).get("applied") == 700, 60, "700 applied")
        effects = [effect_of(e) for e in events]
        users = sorted({e.user_id for e in effects})
        lengths, clicks = _effects_in(settings, users)
        expected_lengths = Counter(e.user_id for e in effects for _ in e.interactions)
        assert lengths == {u: min(settings.history_len, expected_lengths[u]) for u in users}
        expected_clicks = Counter(
            i.item_id for e in effects for i in e.interactions if i.kind == "click"
        )
        assert clicks == {item: float(n) for item, n in expected_clicks.items()}
    finally:
        processes.stop_all()


def test_a_worker_assigned_its_partitions_while_redis_is_away_waits_and_applies_everything(
    kafka_bootstrap: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """Where to resume is read from Redis at each assignment: Redis away then must not stop
    the worker (it resumes from Kafka's offsets and checks Redis once it is back)."""
    settings = _settings(kafka_bootstrap, private_redis, tmp_path / "data")
    events = list(sample_events(200, users=40, items=60, seed=44))
    private_redis.stop()
    processes = Processes()
    try:
        worker = processes.start("worker", settings)
        with EventProducer(settings) as producer:
            for event in events:
                producer.send(event)
            producer.flush()
        time.sleep(8.0)  # the worker joins its group and is assigned meanwhile
        assert worker.poll() is None, "the worker exited"
        private_redis.restart_empty()
        wait_until(lambda: ingest_counts(settings).get("applied") == 200, 90, "200 applied")
        assert worker.poll() is None
    finally:
        processes.stop_all()
