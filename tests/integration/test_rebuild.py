"""Rebuild into a shadow namespace while live serves, promote it, roll back (real broker+Redis)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from store.interaction_store import RedisInteractionStore
from store.vector_state import RedisVectorState
from stream.api.app import create_api
from stream.config import Settings
from stream.events.samples import sample_events
from stream.events.topics import ensure_topics
from stream.ops.promote import switch
from stream.ops.rebuild import rebuild
from stream.wiring import redis_client, redis_keys
from tests.conftest import Processes, forget, isolated_settings, produce, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(each_redis: str) -> str:
    """Every test here runs against one Redis and against a Redis Cluster."""
    return each_redis


def _settings(kafka_bootstrap: str, redis_url: str, data_dir: Path) -> Settings:
    return isolated_settings(kafka_bootstrap, redis_url, data_dir).model_copy(
        update={"vector_dim": 32, "publish_interval_s": 0.3, "publish_events": 400}
    )


def _counts(settings: Settings, namespace: str) -> tuple[int, int]:
    """(events applied, events learned by the served version) of one namespace."""

    async def read() -> tuple[int, int]:
        client = redis_client(settings)
        keys = redis_keys(settings.in_namespace(namespace))
        try:
            applied = (await RedisInteractionStore(client, keys).stats()).applied
            learned = await RedisVectorState(client, keys, settings.vector_dim).events_learned()
            return applied, learned
        finally:
            await client.aclose()

    return asyncio.run(read())


def _ranked(api: TestClient, user_id: str) -> list[tuple[str, float]]:
    response = api.get(f"/v1/users/{user_id}/recommendations", params={"k": 10})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["source"] == "personalized", body
    return [(item["item_id"], round(item["score"], 4)) for item in body["items"]]


def _scored(ranked: dict[str, list[tuple[str, float]]]) -> dict[tuple[str, str], float]:
    return {(user, item): score for user, pairs in ranked.items() for item, score in pairs}


def _serves(api: TestClient, namespace: str) -> bool:
    model = api.get("/v1/model").json()
    return bool(model["namespace"] == namespace and model["model_version"] is not None)


def test_a_promoted_rebuild_serves_what_a_fresh_pipeline_fed_the_same_events_serves(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    live = _settings(kafka_bootstrap, redis_url, tmp_path / "live")
    fresh = _settings(kafka_bootstrap, redis_url, tmp_path / "fresh")
    events = list(sample_events(2_000, users=150, items=250, seed=5))
    users = sorted({event.user_id for event in events})[:20]
    processes = Processes()
    try:
        processes.start("worker", live)
        processes.start("trainer", live)
        produce(live, events)
        with TestClient(create_api(live)) as api:
            wait_until(lambda: _counts(live, "") == (2_000, 2_000), 90, "live to learn 2,000")
            wait_until(lambda: _serves(api, ""), 30, "the replica to serve the live model")
            summary = rebuild(live, "shadow", progress=False)
            assert (summary.events, summary.model_version) == (2_000, 1)
            assert _serves(api, ""), "live serves on while a shadow is built"

            switch(live, "shadow", progress=False)
            wait_until(lambda: _serves(api, "shadow"), 30, "the replica to follow the promote")
            promoted = {user: _ranked(api, user) for user in users}

            produce(fresh, events)
            rebuild(fresh, "fresh", progress=False)
            switch(fresh, "fresh", progress=False)
            with TestClient(create_api(fresh)) as fresh_api:
                wait_until(lambda: _serves(fresh_api, "fresh"), 30, "the fresh replica")
                served = {user: _ranked(fresh_api, user) for user in users}
                # The same items with the same scores, up to float summation order (which
                # may also swap two items whose scores tie).
                assert _scored(served) == pytest.approx(_scored(promoted), abs=1e-3)

            # Worker and trainer follow the switch: new events land in the promoted namespace.
            produce(live, list(sample_events(200, users=150, items=250, seed=6)))
            wait_until(lambda: _counts(live, "shadow") == (2_200, 2_200), 60, "shadow to learn")

            switch(live, None, progress=False)  # roll back: the base catches up on the log
            wait_until(lambda: _serves(api, ""), 30, "the replica to follow the rollback")
            wait_until(lambda: _counts(live, "") == (2_200, 2_200), 60, "the base to catch up")
    finally:
        processes.stop_all()
        forget(live)
        forget(fresh)


def test_rebuild_and_promote_refuse_what_cannot_be_done(settings: Settings) -> None:
    with pytest.raises(ValueError, match="no namespace nope"):
        switch(settings, "nope", progress=False)
    with pytest.raises(ValueError, match="nothing to roll back to"):
        switch(settings, None, progress=False)
    with pytest.raises(ValueError, match="bad namespace name"):
        rebuild(settings, "Not A Name", progress=False)
    ensure_topics(settings)
    rebuild(settings, "empty", progress=False)
    with pytest.raises(ValueError, match="exists: pass --force"):
        rebuild(settings, "empty", progress=False)
