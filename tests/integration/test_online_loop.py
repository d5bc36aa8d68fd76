"""The online loop end to end over a real broker and Redis: worker, trainer and API replica."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from model.checkpoints import CheckpointStore
from model.ranked import MatrixTower
from model.ranking import ItemAttributes
from model.recommender import RecommendRequest
from model.serving_models import ServingModels
from store.interaction_store import RedisInteractionStore
from store.vector_state import RedisVectorState
from stream.api.app import create_api
from stream.config import Settings
from stream.events.samples import sample_events
from stream.events.schema import ClickEvent, OrderEvent
from stream.local.processes import stop
from stream.local.stack import free_port
from stream.wiring import redis_client, redis_keys
from tests.conftest import (
    Processes,
    forget,
    isolated_settings,
    produce,
    scrape_metrics,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(each_redis: str) -> str:
    """Every test here runs against one Redis and against a Redis Cluster."""
    return each_redis


def _loop_settings(kafka_bootstrap: str, redis_url: str, data_dir: Path) -> Settings:
    return isolated_settings(kafka_bootstrap, redis_url, data_dir).model_copy(
        update={
            "worker_metrics_port": free_port(),
            "trainer_metrics_port": free_port(),
            "vector_dim": 32,
            "publish_interval_s": 0.3,
            "publish_events": 400,
            "checkpoint_keep": 1_000,
            "prepare_users": 1_000,
        }
    )


def _redis(settings: Settings, read: Any) -> Any:
    """Run `read(vector_state, interaction_store)` against Redis and return its result."""

    async def main() -> Any:
        client = redis_client(settings)
        keys = redis_keys(settings)
        try:
            state = RedisVectorState(client, keys, settings.vector_dim)
            return await read(state, RedisInteractionStore(client, keys))
        finally:
            await client.aclose()

    return asyncio.run(main())


def _published_version(settings: Settings) -> int:
    async def read(state: RedisVectorState, _: RedisInteractionStore) -> int | None:
        return await state.model_version()

    return _redis(settings, read) or 0


def _events_applied(settings: Settings) -> int:
    async def read(_: RedisVectorState, store: RedisInteractionStore) -> int:
        return (await store.stats()).applied

    return int(_redis(settings, read))


def _events_learned(settings: Settings) -> int:
    async def read(state: RedisVectorState, _: RedisInteractionStore) -> int:
        return await state.events_learned()

    return int(_redis(settings, read))


@dataclass
class Loop:
    settings: Settings
    api: TestClient
    processes: Processes
    produced: int = 0

    def produce(self, events: Sequence[ClickEvent | OrderEvent]) -> None:
        """Send unique events and count them."""
        produce(self.settings, events)
        self.produced += len(events)


@pytest.fixture(scope="module")
def loop(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loop]:
    """A worker, a trainer and an API replica, after 3,000 events have been learned."""
    settings = _loop_settings(kafka_bootstrap, redis_url, tmp_path_factory.mktemp("loop"))
    processes = Processes()
    try:
        processes.start("worker", settings)
        processes.start("trainer", settings)
        produce(settings, list(sample_events(3_000, users=200, items=300, seed=3)))
        with TestClient(create_api(settings)) as api:
            wait_until(lambda: _events_learned(settings) == 3_000, 90, "3,000 events learned")
            wait_until(lambda: _events_applied(settings) == 3_000, 90, "3,000 events applied")
            wait_until(
                lambda: (
                    api.get("/v1/model").json()["model_version"] == _published_version(settings)
                ),
                30,
                "the replica to serve the published version",
            )
            yield Loop(settings, api, processes, produced=3_000)
    finally:
        processes.stop_all()
        forget(settings)


def _recommend(api: TestClient, user_id: str, now_ms: int | None = None) -> dict[str, Any]:
    params = {"k": 10} if now_ms is None else {"k": 10, "now_ms": now_ms}
    response = api.get(f"/v1/users/{user_id}/recommendations", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_new_users_click_personalises_their_next_recommendations(loop: Loop) -> None:
    user = f"new-{uuid.uuid4().hex[:8]}"
    before = _recommend(loop.api, user)
    assert before["source"] == "popular"
    clicked = before["items"][0]["item_id"]
    click = ClickEvent(
        event_id=f"click-{user}", user_id=user, ts=datetime.now(UTC), item_id=clicked
    )
    began = time.monotonic()
    loop.produce([click])
    wait_until(
        lambda: _recommend(loop.api, user)["as_of_event_id"] == click.event_id,
        5,
        "the click to reach the user's recommendations",
    )
    took = time.monotonic() - began
    after = _recommend(loop.api, user)
    assert {i["reason"] for i in after["items"]} & {"personalized", "covisit"}
    assert after["model_version"] is not None
    assert clicked not in [i["item_id"] for i in after["items"]]
    assert [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]
    print(f"click -> personalised recommendations in {took * 1000:.0f} ms")


def test_a_new_item_with_metadata_reaches_users_who_just_clicked_its_category(
    loop: Loop,
) -> None:
    async def top(_: RedisVectorState, store: RedisInteractionStore) -> list[tuple[str, float]]:
        return await store.top_items("clicks", 20)

    popular = [item for item, _ in _redis(loop.settings, top)]
    tents, boots = popular[:10], popular[10:]  # well known: no other cold-start candidate
    for item in popular:
        category = "tents" if item in tents else "boots"
        assert loop.api.put(f"/v1/items/{item}", json={"category": category}).status_code == 200
    fresh = f"fresh-tent-{uuid.uuid4().hex[:6]}"
    body = {"category": "tents", "brand": "acme", "price": 99.5}
    assert loop.api.put(f"/v1/items/{fresh}", json=body).status_code == 200
    camper, hiker = (f"{who}-{uuid.uuid4().hex[:6]}" for who in ("camper", "hiker"))
    clicks = [
        ClickEvent(event_id=f"{user}-{n}", user_id=user, ts=datetime.now(UTC), item_id=item)
        for user, items in ((camper, tents[:3]), (hiker, boots[:3]))
        for n, item in enumerate(items)
    ]
    loop.produce(clicks)
    wait_until(
        lambda: all(_recommend(loop.api, u)["as_of_event_id"] == f"{u}-2" for u in (camper, hiker)),
        10,
        "the clicks to reach the users' recommendations",
    )
    shown = {i["item_id"]: i["reason"] for i in _recommend(loop.api, camper)["items"]}
    assert shown.get(fresh) == "cold_start"
    assert fresh not in {i["item_id"] for i in _recommend(loop.api, hiker)["items"]}


def test_a_deleted_item_stays_deleted_across_publishes(loop: Loop) -> None:
    async def top(_: RedisVectorState, store: RedisInteractionStore) -> list[tuple[str, float]]:
        return await store.top_items("clicks", 5)

    gone = _redis(loop.settings, top)[0][0]  # the most clicked item: every source knows it
    assert loop.api.delete(f"/v1/items/{gone}").status_code == 204
    start = _published_version(loop.settings)
    fans = [f"fan-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    loop.produce(
        [
            ClickEvent(event_id=f"{u}-{n}", user_id=u, ts=datetime.now(UTC), item_id=item)
            for u in fans
            for n, item in enumerate((gone, "item-000002", gone))
        ]
    )
    wait_until(lambda: _published_version(loop.settings) > start, 30, "a newer model version")
    wait_until(
        lambda: loop.api.get("/v1/model").json()["model_version"] > start,
        10,
        "the replica to serve it",
    )

    async def vector(state: RedisVectorState, _: RedisInteractionStore) -> object:
        return await state.item_versions([gone])

    assert _redis(loop.settings, vector) == {}  # the trainer did not publish it again
    for user in [*fans, "probe-0", "probe-1"]:
        for repeats in ("false", "true"):
            params = {"k": 50, "repeats": repeats}
            body = loop.api.get(f"/v1/users/{user}/recommendations", params=params).json()
            assert gone not in {i["item_id"] for i in body["items"]}, (user, repeats)
    assert loop.api.get(f"/v1/items/{gone}/similar").status_code == 404
    body = {"category": "tents"}
    assert loop.api.put(f"/v1/items/{gone}", json=body).status_code == 200  # brought back


def test_model_versions_advance_while_events_flow_and_the_replica_converges(loop: Loop) -> None:
    start = _published_version(loop.settings)
    seen = {start}
    for wave in range(3):
        loop.produce(list(sample_events(600, users=200, items=300, seed=10 + wave)))
        wait_until(
            lambda: _published_version(loop.settings) > max(seen), 30, "a newer model version"
        )
        seen.add(_published_version(loop.settings))
    assert len(seen) >= 4
    wait_until(lambda: _events_learned(loop.settings) >= loop.produced, 60, "every event learned")
    assert _events_learned(loop.settings) == loop.produced
    latest = _published_version(loop.settings)
    wait_until(
        lambda: loop.api.get("/v1/model").json()["model_version"] == latest,
        10,
        f"the replica to serve version {latest}",
    )
    model = loop.api.get("/v1/model").json()
    assert model["publish_latency_ms"] is not None
    assert model["publish_latency_ms"] >= 0
    metrics = loop.api.get("/metrics").text
    assert f"recstream_served_model_version {float(latest)}" in metrics
    assert "recstream_publish_latency_seconds_count" in metrics


@contextlib.contextmanager
def _training_meanwhile(loop: Loop, seed: int) -> Iterator[None]:
    """300 new events every 0.1 s while the block runs: versions keep being published."""
    stop = threading.Event()

    def keep_training() -> None:
        n = seed
        while not stop.is_set():
            loop.produce(list(sample_events(300, users=200, items=300, seed=n)))
            n += 1
            time.sleep(0.1)

    feeder = threading.Thread(target=keep_training)
    feeder.start()
    try:
        yield
    finally:
        stop.set()
        feeder.join()


def test_every_response_is_ranked_by_one_model_version(loop: Loop) -> None:
    """While versions are published every 0.3 s, each response must be exactly the ranking
    of the version v it names: its items and ranker scores, recomputed from checkpoint v
    (tower, candidate sources and ranker) as `recstream eval` computes them."""
    probes = [f"probe-{n}" for n in range(5)]
    items = [f"item-{n:06d}" for n in range(1, 60)]
    clicks = [
        ClickEvent(event_id=f"{u}-{n}", user_id=u, ts=datetime.now(UTC), item_id=items[n * 7 % 59])
        for u in probes
        for n in range(4)
    ]
    loop.produce(clicks)
    wait_until(
        lambda: all(_recommend(loop.api, u)["as_of_event_id"] == f"{u}-3" for u in probes),
        10,
        "the probes' clicks to be reflected",
    )
    answers: list[dict[str, Any]] = []
    now_ms = int(time.time() * 1000)
    with _training_meanwhile(loop, seed=100):
        began = time.monotonic()  # 6 s at least; longer (up to 30 s) on a loaded machine
        while time.monotonic() - began < 6 or (
            len({a["model_version"] for a in answers}) < 3 and time.monotonic() - began < 30
        ):
            answers.extend(_recommend(loop.api, u, now_ms) for u in probes)
    versions = {a["model_version"] for a in answers}
    assert len(versions) >= 3, f"versions did not advance during the test: {versions}"
    checkpoints = CheckpointStore(loop.settings.checkpoint_dir)

    async def histories(_: RedisVectorState, store: RedisInteractionStore) -> dict[str, Any]:
        return {u: await store.history(u) for u in probes}

    history = _redis(loop.settings, histories)
    served = ServingModels(checkpoints, keep=1)
    for answer in sorted(answers, key=lambda a: int(a["model_version"])):
        model = served.get(answer["model_version"])
        ranking = served.ranking(answer["model_version"])
        assert model is not None
        assert ranking is not None
        user = answer["user_id"]
        past = tuple(h.interaction(user) for h in reversed(history[user]))
        ids, vectors = model.catalogue()
        vector = model.embed_users([past], [history[user][0].ts_ms])[0]
        tower = MatrixTower((vectors @ vector).numpy(), ids, {i: c for c, i in enumerate(ids)})
        request = RecommendRequest(user, past, now_ms, frozenset(i.item_id for i in past))
        expected = ranking.rank(request, tower, 10, ItemAttributes())
        assert [i["item_id"] for i in answer["items"]] == [e.item_id for e in expected]
        np.testing.assert_allclose(
            [i["score"] for i in answer["items"]], [e.score for e in expected], atol=1e-4
        )


def _user_vectors_made(api: TestClient) -> dict[str, float]:
    """The replica's `recstream_api_user_vectors_total` by `when`."""
    return {
        sample.labels["when"]: sample.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for sample in family.samples
        if sample.name == "recstream_api_user_vectors_total"
    }


def test_users_served_lately_are_prepared_for_each_new_version_off_the_request_path(
    loop: Loop,
) -> None:
    """While versions are published every 0.3 s, users who keep asking (and do nothing
    else) are re-embedded with each new version before the replica serves it: after their
    first answers, no request waits for a forward pass."""
    users = [f"regular-{n}" for n in range(4)]
    clicks = [
        ClickEvent(event_id=f"{u}-{n}", user_id=u, ts=datetime.now(UTC), item_id=f"item-{n:06d}")
        for u in users
        for n in range(1, 4)
    ]
    loop.produce(clicks)
    wait_until(
        lambda: all(_recommend(loop.api, u)["as_of_event_id"] == f"{u}-3" for u in users),
        10,
        "the users' clicks to be reflected",
    )
    for user in users:  # every one of them asked at the served version: none is new now
        _recommend(loop.api, user)
    before = _user_vectors_made(loop.api)
    versions: set[int] = set()
    with _training_meanwhile(loop, seed=500):
        began = time.monotonic()
        while len(versions) < 4 and time.monotonic() - began < 30:
            versions.update(_recommend(loop.api, u)["model_version"] for u in users)
    after = _user_vectors_made(loop.api)
    assert len(versions) >= 4, f"versions did not advance during the test: {versions}"
    assert after["on_request"] == before["on_request"]
    assert after["prepared"] >= before["prepared"] + 3 * len(users)


def _learned_once(settings: Settings, events: int, duplicates: int) -> int:
    """The trainer's newest full state has learned `events` once and skipped `duplicates`;
    returns its version."""
    checkpoint = CheckpointStore(settings.checkpoint_dir).load()
    assert checkpoint.extra["events_learned"] == events
    assert checkpoint.extra["duplicates"] == duplicates
    assert sum(checkpoint.position.values()) == events + duplicates
    return checkpoint.version


def _killed_trainer_settings(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, checkpoint_state_s: float
) -> Settings:
    """A trainer that publishes often in small batches, so that a kill lands between versions,
    writing its full state every `checkpoint_state_s` (0: with every version)."""
    return _loop_settings(kafka_bootstrap, redis_url, tmp_path / "data").model_copy(
        update={
            "publish_interval_s": 0.2,
            "publish_events": 200,
            "train_batch": 64,
            "checkpoint_state_s": checkpoint_state_s,
        }
    )


def test_a_trainer_killed_with_sigkill_resumes_without_learning_twice(
    kafka_bootstrap: str, single_redis_url: str, tmp_path: Path
) -> None:
    """About the trainer's checkpoints, not Redis's layout: run once, on one Redis. Every
    version carries the full state here (the next test kills a trainer between full states)."""
    settings = _killed_trainer_settings(kafka_bootstrap, single_redis_url, tmp_path, 0.0)
    events = list(sample_events(6_000, users=300, items=400, seed=5))
    processes = Processes()
    try:
        produce(settings, [*events, events[10], events[4_000]])  # two duplicates
        first = processes.start("trainer", settings)
        wait_until(lambda: _events_learned(settings) >= 600, 60, "some events learned")
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        killed_at = _events_learned(settings)
        assert 0 < killed_at < len(events), "the kill must land mid-stream"
        processes.start("trainer", settings)
        wait_until(lambda: _events_learned(settings) >= len(events), 120, "every event learned")
        time.sleep(1.0)  # nothing more may arrive
        assert _events_learned(settings) == len(events)
        _learned_once(settings, len(events), duplicates=2)
    finally:
        processes.stop_all()
        forget(settings)


def test_a_trainer_killed_between_full_states_resumes_from_the_last_one_learning_nothing_twice(
    kafka_bootstrap: str, single_redis_url: str, tmp_path: Path
) -> None:
    """With `checkpoint_state_s`, the versions between full states only serve: a killed
    trainer resumes from the last full state, publishes it as a new version (versions only
    grow) and learns the rest once; a graceful stop then writes the full state."""
    settings = _killed_trainer_settings(kafka_bootstrap, single_redis_url, tmp_path, 3_600.0)
    events = list(sample_events(3_000, users=300, items=400, seed=6))
    processes = Processes()
    try:
        produce(settings, [*events, events[10]])  # a duplicate
        first = processes.start("trainer", settings)
        wait_until(lambda: _events_learned(settings) >= 600, 60, "some events learned")
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        served = _published_version(settings)
        assert CheckpointStore(settings.checkpoint_dir).versions() == [1]  # the first only
        assert served > 1
        second = processes.start("trainer", settings)
        wait_until(lambda: _events_learned(settings) >= len(events), 120, "every event learned")
        time.sleep(1.0)  # nothing more may arrive
        assert _events_learned(settings) == len(events)

        async def notes(state: RedisVectorState, _: RedisInteractionStore) -> list[object]:
            newest = await state.model_version() or 0
            infos = [await state.model_info(v) for v in range(served + 1, newest + 1)]
            return [info.get("resumed_from") for info in infos]

        assert _redis(settings, notes)[0] == 1  # the first version after the kill
        stop(second)
        assert _learned_once(settings, len(events), duplicates=1) == _published_version(settings)
    finally:
        processes.stop_all()
        forget(settings)


def test_worker_and_trainer_export_their_metrics(loop: Loop) -> None:
    worker = scrape_metrics(loop.settings.worker_metrics_port)
    trainer = scrape_metrics(loop.settings.trainer_metrics_port)
    assert worker["recstream_events_processed_total"] >= 3_000
    assert worker["recstream_dead_letters_total"] == 0
    assert worker["recstream_freshness_seconds_count"] > 0
    assert worker["recstream_user_vectors_total"] > 0
    assert "recstream_consumer_lag" in worker
    assert trainer["recstream_trainer_events_total"] >= 3_000
    assert trainer["recstream_model_version"] == _published_version(loop.settings)
    assert trainer["recstream_trainer_loss"] > 0
    assert trainer["recstream_publish_seconds_count"] >= 1
    assert trainer["recstream_trainer_lag"] >= 0
