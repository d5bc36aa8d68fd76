"""Retrieval over HTTP against real Redis: answers, errors, item admin, feed, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model.interaction import EventEffect, Interaction
from store.vector_state import RedisVectorState
from stream.api.app import create_api
from stream.config import Settings
from stream.wiring import interaction_store, redis_client, redis_keys
from tests.conftest import wait_until

pytestmark = pytest.mark.integration
DIM = 8


def _write(settings: Settings, ids: list[str], seed: int, user: str | None = None) -> None:
    """Item vectors (and optionally a user vector) written as the trainer would."""

    async def main() -> None:
        client = redis_client(settings)
        state = RedisVectorState(client, redis_keys(settings), DIM)
        rng = np.random.default_rng(seed)
        vectors = rng.normal(size=(len(ids), DIM)).astype(np.float32)
        await state.put_item_vectors(ids, vectors, model_version=1)
        if user is not None:
            await state.put_user_vector(user, vectors[0], model_version=1, updated_ms=1)
        await client.aclose()

    asyncio.run(main())


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    narrow = settings.model_copy(update={"vector_dim": DIM})
    _write(narrow, [f"i{n}" for n in range(100)], seed=0, user="u1")
    with TestClient(create_api(narrow)) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 20, "the index to load")
        yield client


def test_recommendations_answer_with_items_reasons_and_version(api: TestClient) -> None:
    body = api.get("/v1/users/u1/recommendations", params={"k": 5}).json()
    assert body["user_id"] == "u1"
    assert body["source"] == "personalized"
    assert body["model_version"] == 1
    assert len(body["items"]) == 5
    assert all(set(i) == {"item_id", "score", "reason"} for i in body["items"])
    assert api.get("/readyz").json() == {"status": "ready", "index_items": 100}


@pytest.mark.parametrize("k", [0, 501, "ten"])
def test_k_out_of_range_is_a_422_with_a_reason(api: TestClient, k: int | str) -> None:
    response = api.get("/v1/users/u1/recommendations", params={"k": k})
    assert response.status_code == 422
    assert "k" in response.json()["reason"]


def test_metadata_filters_and_deletes_apply_at_once(api: TestClient) -> None:
    assert api.put("/v1/items/i7", json={"category": "tents", "tags": ["new"]}).status_code == 200
    assert api.put("/v1/items/i8", json={"category": "tents", "in_stock": False}).status_code == 200
    assert api.put("/v1/items/i9", json={"colour": "red"}).status_code == 422
    tents = api.get("/v1/users/u1/recommendations", params={"k": 10, "category": "tents"}).json()
    assert {i["item_id"] for i in tents["items"]} == {"i7", "i8"}
    in_stock = api.get(
        "/v1/users/u1/recommendations", params={"category": "tents", "in_stock": "true"}
    ).json()
    assert [i["item_id"] for i in in_stock["items"]] == ["i7"]
    assert api.delete("/v1/items/i7").status_code == 204
    after = api.get("/v1/users/u1/recommendations", params={"k": 100}).json()
    assert "i7" not in {i["item_id"] for i in after["items"]}
    gone = api.delete("/v1/items/i7")
    assert gone.status_code == 404
    assert "i7" in gone.json()["reason"]


def test_similar_items_and_unknown_items(api: TestClient) -> None:
    body = api.get("/v1/items/i3/similar", params={"k": 4, "exclude": "i5,i6"}).json()
    assert len(body["items"]) == 4
    assert {"i3", "i5", "i6"}.isdisjoint(i["item_id"] for i in body["items"])
    missing = api.get("/v1/items/nope/similar")
    assert missing.status_code == 404
    assert missing.json()["reason"] == "unknown item 'nope'"


def test_vectors_written_after_start_reach_the_replica_through_the_feed(
    api: TestClient, settings: Settings
) -> None:
    _write(settings.model_copy(update={"vector_dim": DIM}), ["late-1", "late-2"], seed=9)
    wait_until(
        lambda: api.get("/v1/items/late-1/similar").status_code == 200, 10, "the feed to apply"
    )
    assert api.get("/readyz").json()["index_items"] == 102


def test_metrics_and_openapi_are_served(api: TestClient) -> None:
    api.get("/v1/users/u1/recommendations")
    metrics = api.get("/metrics").text
    assert (
        'recstream_http_request_seconds_bucket{le="0.005",method="GET",route="/v1/users/{user_id}/recommendations"}'
        in metrics
    )
    assert "recstream_index_items 100.0" in metrics
    assert "recstream_api_prepared_user_misses_total 0.0" in metrics
    document = api.get("/openapi.json").json()
    paths = document["paths"]
    assert {"/v1/users/{user_id}/recommendations", "/v1/items/{item_id}/similar"} <= set(paths)
    body = paths["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    event = {"$ref": "#/components/schemas/Event"}
    assert body["oneOf"][0] == event
    assert body["oneOf"][1]["items"] == event
    schemas = document["components"]["schemas"]
    assert schemas["Event"]["discriminator"]["propertyName"] == "type"
    assert {"ClickEvent", "OrderEvent", "OrderLine", "ErrorOut"} <= set(schemas)
    assert set(document["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}
    recommend = paths["/v1/users/{user_id}/recommendations"]["get"]
    assert {"200", "401", "403", "422", "429"} <= set(recommend["responses"])
    assert (
        "ErrorOut" in recommend["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
    )
    assert "`read` scope" in recommend["description"]
    assert "`admin` scope" in paths["/v1/items/{item_id}"]["put"]["description"]
    assert paths["/healthz"]["get"]["security"] == []
    stats = api.get("/v1/stats").json()
    assert stats["index_items"] == 100
    assert stats["events_applied"] == 0  # this test wrote vectors, applied no event
    assert "/demo" not in paths
    assert 'id="recs"' in api.get("/demo").text


def test_repeats_follow_the_setting_unless_a_request_says_otherwise(settings: Settings) -> None:
    narrow = settings.model_copy(update={"vector_dim": DIM, "repeats": True})
    _write(narrow, [f"i{n}" for n in range(20)], seed=1, user="u1")
    with TestClient(create_api(narrow)) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 20, "the index to load")
        asyncio.run(_apply_order(narrow, "u1", "i7"))
        by_default = client.get("/v1/users/u1/recommendations", params={"k": 4}).json()
        assert by_default["items"][0] == {"item_id": "i7", "score": 1.0, "reason": "repeat"}
        off = client.get("/v1/users/u1/recommendations", params={"k": 4, "repeats": "false"})
        assert "i7" not in {i["item_id"] for i in off.json()["items"]}


async def _apply_order(settings: Settings, user: str, item: str) -> None:
    """The order's effect in Redis, as a worker applies it (no worker runs in this test)."""
    client = redis_client(settings)
    store = interaction_store(settings, client)
    effect = EventEffect("o1", user, (Interaction(user, item, "order", 1_767_225_600_000),))
    await store.apply_many([effect])
    await client.aclose()
