"""`POST /v1/events` against the real broker: counts, per-item reasons, body limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stream.api.app import create_api
from stream.api.events import MAX_BODY_BYTES, MAX_EVENTS
from stream.config import Settings
from stream.events.topics import TopicNames
from tests.conftest import read_topic

pytestmark = pytest.mark.integration


def click(n: int) -> dict[str, Any]:
    return {
        "type": "click",
        "event_id": f"h-{n}",
        "user_id": f"u{n % 7}",
        "ts": "2026-05-01T10:00:00Z",
        "item_id": f"i{n}",
    }


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_api(settings)) as test_client:
        yield test_client


def test_valid_events_are_accepted_and_land_on_their_topics(
    client: TestClient, settings: Settings
) -> None:
    order = {
        "type": "order",
        "event_id": "h-o",
        "user_id": "u1",
        "ts": 1777629600000,
        "order_id": "o1",
        "items": [{"item_id": "i1", "quantity": 2, "price": 5}],
    }
    response = client.post("/v1/events", json=[click(1), click(2), order])
    assert response.status_code == 202
    assert response.json() == {"accepted": 3, "rejected": 0, "errors": []}

    topics = TopicNames.from_settings(settings)
    clicks = read_topic(settings.kafka_bootstrap, topics.clicks, expected=2)
    orders = read_topic(settings.kafka_bootstrap, topics.orders, expected=1)
    assert sorted(c["event_id"] for c in clicks) == ["h-1", "h-2"]
    assert [o["order_id"] for o in orders] == ["o1"]


def test_a_single_object_is_one_event(client: TestClient) -> None:
    response = client.post("/v1/events", json=click(5))
    assert response.status_code == 202
    assert response.json()["accepted"] == 1


def test_mixed_batch_reports_a_reason_per_rejected_item(client: TestClient) -> None:
    bad_type = {**click(3), "type": "view"}
    no_item = {k: v for k, v in click(4).items() if k != "item_id"}
    response = client.post("/v1/events", json=[click(1), bad_type, no_item, 42])
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 3)
    by_index = {e["index"]: e for e in body["errors"]}
    assert "unknown event type 'view'" in by_index[1]["reason"]
    assert by_index[1]["event_id"] == "h-3"
    assert "item_id" in by_index[2]["reason"]
    assert "JSON object" in by_index[3]["reason"]


def test_nothing_valid_is_422_with_reasons(client: TestClient) -> None:
    response = client.post("/v1/events", json=[{"type": "click"}])
    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == 0
    assert body["errors"][0]["reason"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [(b"{not json", "not valid JSON"), (b"[]", "no events"), (b"[" * 100_000, "nested too deeply")],
)
def test_unusable_bodies_are_422_with_a_reason(
    client: TestClient, body: bytes, fragment: str
) -> None:
    response = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert fragment in response.json()["reason"]


def test_more_events_than_the_limit_is_413(client: TestClient) -> None:
    response = client.post("/v1/events", json=[click(n) for n in range(MAX_EVENTS + 1)])
    assert response.status_code == 413
    assert str(MAX_EVENTS) in response.json()["reason"]


def test_a_body_over_one_mebibyte_is_413(client: TestClient) -> None:
    padded = json.dumps([{**click(1), "pad": "x" * MAX_BODY_BYTES}]).encode()
    response = client.post(
        "/v1/events", content=padded, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "exceeds" in response.json()["reason"]


def test_exactly_the_limits_is_accepted(client: TestClient) -> None:
    response = client.post("/v1/events", json=[click(n) for n in range(MAX_EVENTS)])
    assert response.status_code == 202
    assert response.json()["accepted"] == MAX_EVENTS


def test_a_time_at_the_calendars_edge_is_a_422_with_a_reason_not_a_500(client: TestClient) -> None:
    edge = {**click(9), "ts": "9999-12-31T23:59:59-01:00"}
    response = client.post("/v1/events", json=[edge])
    assert response.status_code == 422
    assert "ts" in response.json()["errors"][0]["reason"]


def test_an_event_dated_past_the_clock_skew_is_rejected_with_the_reason(
    client: TestClient,
) -> None:
    ahead = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    response = client.post("/v1/events", json=[click(10), {**click(11), "ts": ahead}])
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert "ahead of its arrival" in body["errors"][0]["reason"]
    assert body["errors"][0]["index"] == 1
