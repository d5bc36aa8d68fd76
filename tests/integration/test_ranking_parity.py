"""Train/serve parity: an API replica ranks a request exactly as `recstream eval` ranks it,
from the ranking state the trainer published with the model version."""

from __future__ import annotations

import asyncio
import random

import pytest
from fastapi.testclient import TestClient

from model.interaction import EventEffect, Interaction, InteractionKind
from model.recommender import RecommendRequest
from stream.api.app import create_api
from stream.config import Settings
from stream.events.handlers import Outcome, SourcePosition
from stream.training.learner import StreamLearner
from stream.training.loop import fresh_learner
from stream.training.publisher import ModelPublisher
from stream.wiring import checkpoint_store, interaction_store, redis_client, vector_state
from tests.conftest import wait_until

pytestmark = pytest.mark.integration
HOUR_MS = 3_600_000
NOW_MS = 500 * HOUR_MS
CATEGORIES = {f"i{n}": "tents" if n % 3 else "boots" for n in range(60)}


def _stream(seed: int, n: int = 900) -> list[EventEffect]:
    """Users walk a catalogue in short sequences, now and then buying something again."""
    rng = random.Random(seed)
    place = {f"u{u}": rng.randrange(60) for u in range(40)}
    effects = []
    for t in range(n):
        user = rng.choice(sorted(place))
        place[user] = (place[user] + rng.choice((1, 1, 2, 0))) % 60
        kind: InteractionKind = "order" if rng.random() < 0.2 else "click"
        event = Interaction(user, f"i{place[user]}", kind, t * HOUR_MS // 2)
        effects.append(EventEffect(f"e{t}", user, (event,)))
    return effects


def _learn_and_publish(settings: Settings, effects: list[EventEffect]) -> StreamLearner:
    learner = fresh_learner(settings, seed=0)
    for item, category in CATEGORIES.items():
        learner.ranking.items.set(item, category, None)
    batch: list[tuple[SourcePosition, Outcome]] = [
        (SourcePosition("clicks", 0, n), effect) for n, effect in enumerate(effects)
    ]
    for start in range(0, len(batch), 64):
        learner.learn(batch[start : start + 64])

    async def publish() -> None:
        client = redis_client(settings)
        publisher = ModelPublisher(vector_state(settings, client), checkpoint_store(settings))
        await publisher.publish(learner, learned_ms=1, loss=0.0)
        await interaction_store(settings, client).apply_many(effects)
        await client.aclose()

    asyncio.run(publish())
    return learner


def test_the_api_ranks_a_request_as_the_evaluator_does(settings: Settings) -> None:
    effects = _stream(seed=4)
    learner = _learn_and_publish(settings, effects)
    histories: dict[str, list[Interaction]] = {}
    for effect in effects:
        histories.setdefault(effect.user_id, []).extend(effect.interactions)
    with TestClient(create_api(settings)) as api:
        wait_until(lambda: api.get("/readyz").status_code == 200, 30, "the index to load")
        for item, category in CATEGORIES.items():
            assert api.put(f"/v1/items/{item}", json={"category": category}).status_code == 200
        compared = 0
        for user in sorted(histories)[:10]:
            past = tuple(histories[user])
            seen = frozenset(i.item_id for i in past)
            request = RecommendRequest(user, past, NOW_MS, seen)
            expected = learner.recommender.recommend_many([request], 10)[0]
            params = {"k": 10, "now_ms": NOW_MS}
            body = api.get(f"/v1/users/{user}/recommendations", params=params).json()
            assert [i["item_id"] for i in body["items"]] == expected, user
            assert body["model_version"] == 1
            assert {i["reason"] for i in body["items"]} <= {
                "personalized",
                "covisit",
                "cold_start",
                "popular",
            }
            compared += len(expected)
        assert compared == 100
        boots: dict[str, int | str] = {"k": 10, "category": "boots", "now_ms": NOW_MS}
        strict = api.get("/v1/users/u1/recommendations", params=boots).json()["items"]
        assert len(strict) == 10  # filters hold on the ranked path too
        assert {CATEGORIES[i["item_id"]] for i in strict} == {"boots"}
        repeats: dict[str, int | str] = {"k": 10, "repeats": "true", "now_ms": NOW_MS}
        again = api.get("/v1/users/u1/recommendations", params=repeats).json()
        past = tuple(histories["u1"])
        request = RecommendRequest("u1", past, NOW_MS)
        assert [i["item_id"] for i in again["items"]] == (
            learner.recommender.recommend_many([request], 10)[0]
        )
