"""API keys on the real service, and pseudonymised user ids from HTTP ingest to Redis and back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from store.redis_keys import RedisKeys
from stream.api.app import InsecureConfigError, create_api
from stream.api.auth import new_key
from stream.config import Settings
from stream.events.topics import TopicNames
from stream.local.stack import free_port
from tests.conftest import Spawner, read_topic, wait_until

pytestmark = pytest.mark.integration


def _click(n: int, user: str, item: str) -> dict[str, object]:
    ts = 1767225600000 + n
    return {"type": "click", "event_id": f"sec-{n}", "user_id": user, "ts": ts, "item_id": item}


def test_keys_guard_every_route_and_raw_user_ids_never_reach_kafka_or_redis(
    settings: Settings, start_worker: Spawner
) -> None:
    reader, reader_entry = new_key("shop-web", ["read"])
    ingester, ingester_entry = new_key("collector", ["ingest"])
    admin, admin_entry = new_key("ops", ["admin"])
    secured = settings.model_copy(
        update={
            "api_keys": f"[{reader_entry},{ingester_entry},{admin_entry}]",
            "pseudonym_key": SecretStr("k" * 32),
        }
    )
    start_worker()  # the worker pseudonymises too: it sees what HTTP ingest already did
    events = [_click(n, f"shopper-{n % 3}", "i-top") for n in range(6)]
    events += [_click(10, "alice.raw@example.com", "i-top"), _click(11, "bob", "i-2")]
    with TestClient(create_api(secured)) as api:
        assert api.post("/v1/events", json=events).status_code == 401
        denied = api.post("/v1/events", json=events, headers={"X-API-Key": reader})
        assert denied.status_code == 403
        accepted = api.post("/v1/events", json=events, headers={"X-API-Key": ingester})
        assert accepted.status_code == 202, accepted.text

        def put_item(key: str) -> int:
            meta = {"in_stock": True}
            return api.put("/v1/items/i-2", json=meta, headers={"X-API-Key": key}).status_code

        assert (put_item(reader), put_item(admin)) == (403, 200)
        assert api.get("/v1/model").status_code == 401
        assert api.get("/healthz").status_code == 200

        keys = RedisKeys(secured.keys_prefix)
        client = redis.Redis.from_url(secured.redis_url)
        try:
            wait_until(lambda: int(client.hget(keys.stats, "applied") or 0) == 8, 60, "applied")
            stored = [k.decode() for k in client.scan_iter(match=f"{secured.redis_prefix}*")]
            histories = [str(client.zrange(k, 0, -1)) for k in stored if k.endswith(":history")]
        finally:
            client.close()
        assert len(histories) == 5
        assert not [k for k in stored if "alice" in k or "shopper" in k or "bob" in k]
        assert not [h for h in histories if "alice" in h]
        logged = read_topic(secured.kafka_bootstrap, TopicNames.from_settings(secured).clicks, 8)
        assert {e["user_id"][:2] for e in logged} == {"p:"}
        assert "alice" not in json.dumps(logged)

        def items_for(user: str) -> list[str]:
            answer = api.get(f"/v1/users/{user}/recommendations", headers={"X-API-Key": reader})
            assert answer.status_code == 200
            assert answer.json()["user_id"] == user
            return [item["item_id"] for item in answer.json()["items"]]

        assert "i-top" in items_for("someone-new")
        assert "i-top" not in items_for("alice.raw@example.com"), "her history was found"


@pytest.mark.parametrize("keys", [None, "[]"])
def test_the_api_refuses_to_start_open_unless_told_to(settings: Settings, keys: str | None) -> None:
    closed = settings.model_copy(update={"api_keys": keys, "insecure_open": False})
    with pytest.raises(InsecureConfigError, match="--insecure-open"):
        create_api(closed)
    create_api(closed.model_copy(update={"insecure_open": True}))  # asked for: it starts


def test_readiness_names_no_internal_host(settings: Settings, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: Redis is unreachable
    away = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    with TestClient(create_api(away)) as api:
        answer = api.get("/readyz")
    assert answer.status_code == 503
    assert "Redis unreachable" in answer.text
    assert "127.0.0.1" not in answer.text
    assert str(port) not in answer.text


def test_item_metadata_bodies_are_bounded_like_events(settings: Settings) -> None:
    with TestClient(create_api(settings)) as api:
        big = api.put("/v1/items/i-big", json={"tags": ["x" * 1_000] * 90})
        long_tag = api.put("/v1/items/i-tag", json={"tags": ["x" * 5_000]})
        fine = api.put("/v1/items/i-fine", json={"category": "c", "tags": ["a", "b"]})
    assert big.status_code == 413
    assert "bytes" in big.json()["reason"]
    assert long_tag.status_code == 422
    assert fine.status_code == 200
