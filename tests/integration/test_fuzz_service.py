"""Fuzzing the running service: request bodies and query parameters through HTTP, and raw
messages straight into the topics. Every input gets a 2xx, a 4xx with a reason, or a
dead-letter entry with a reason; nothing crashes and nothing is lost."""

from __future__ import annotations

import json
import random
from collections import Counter
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from stream.api.app import create_api
from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.samples import sample_events
from stream.events.topics import TopicNames
from tests.conftest import Spawner, ingest_counts, read_topic, wait_until
from tests.strategies import encode, event_like, json_values, odd_text, payloads, valid_clicks

pytestmark = pytest.mark.integration

FUZZ = hypothesis_settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
bodies = (
    payloads
    | st.lists(event_like | valid_clicks, max_size=5).map(encode)
    | st.integers(1_001, 1_200).map(lambda n: encode([{}] * n))
    | st.integers(1_048_577, 1_100_000).map(lambda n: b" " * n)
)
ids = odd_text | st.text(max_size=300)
query_values = odd_text | st.integers(-(10**12), 10**12).map(str) | st.text(max_size=3000)


def _answered(status: int, body: bytes, allowed: set[int]) -> None:
    assert status in allowed, (status, body[:300])
    if status >= 400:
        assert json.loads(body)["reason"]


def test_fuzzed_ingest_bodies_get_202_or_a_4xx_with_a_reason(settings: Settings) -> None:
    seen: Counter[int] = Counter()
    with TestClient(create_api(settings)) as api:

        @FUZZ
        @given(body=bodies)
        def post(body: bytes) -> None:
            answer = api.post("/v1/events", content=body, headers={"content-type": "x"})
            _answered(answer.status_code, answer.content, {202, 413, 422})
            seen[answer.status_code] += 1

        post()
    print(f"fuzzed ingest bodies by status: {dict(seen)}")
    assert sum(seen.values()) >= 250
    assert seen[422] > 0
    assert seen[202] > 0


def test_fuzzed_query_parameters_of_every_endpoint_never_give_a_5xx(settings: Settings) -> None:
    with TestClient(create_api(settings)) as api:

        @FUZZ
        @given(
            user=ids,
            item=ids,
            k=query_values,
            category=query_values,
            in_stock=st.sampled_from(["true", "0", "maybe", ""]) | query_values,
            exclude=query_values,
            meta=json_values,
        )
        def query(
            user: str, item: str, k: str, category: str, in_stock: str, exclude: str, meta: object
        ) -> None:
            params = {"k": k, "category": category, "in_stock": in_stock, "exclude": exclude}
            user_path, item_path = quote(user, safe=""), quote(item, safe="")
            for answer in (
                api.get(f"/v1/users/{user_path}/recommendations", params=params),
                api.get(f"/v1/items/{item_path}/similar", params=params),
                api.get("/v1/model", params=params),
                api.put(f"/v1/items/{item_path}", content=encode(meta)),
                api.delete(f"/v1/items/{item_path}"),
            ):
                _answered(answer.status_code, answer.content, {200, 204, 400, 404, 405, 422})

        query()


def _hostile_messages(n: int, seed: int) -> list[tuple[bytes, bytes | None]]:
    """Valid events (some repeated), corrupted and truncated ones, garbage, huge and deep."""
    rng = random.Random(seed)
    valid = [e.to_json() for e in sample_events(n, seed=seed)]
    out: list[tuple[bytes, bytes | None]] = []
    for number in range(n):
        payload = valid[number]
        kind = rng.randrange(8)
        if kind == 1:
            payload = valid[rng.randrange(number + 1)]  # a repeated event id
        elif kind == 2:
            flipped = bytearray(payload)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            payload = bytes(flipped)
        elif kind == 3:
            payload = payload[: rng.randrange(len(payload))]
        elif kind == 4:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        elif kind == 5:
            payload = b"[" * 100_000 + b"]" * 100_000
        elif kind == 6:
            document = json.loads(payload)
            document["user_id"] = "x" * 100_000
            payload = json.dumps(document).encode()
        out.append((payload, rng.choice([None, b"", b"user-000001", "ü".encode()])))
    return out


def test_hostile_messages_in_the_topic_are_applied_or_dead_lettered_never_lost(
    settings: Settings, start_worker: Spawner
) -> None:
    messages = _hostile_messages(400, seed=21)
    start_worker()
    topics = TopicNames.from_settings(settings)
    with EventProducer(settings) as producer:
        for payload, key in messages:
            producer.send_raw(topics.clicks, payload, key)
        producer.flush()
    wait_until(
        lambda: sum(ingest_counts(settings).values()) == len(messages), 90, "every message handled"
    )
    seen = ingest_counts(settings)
    print(f"hostile topic messages: {seen}")
    assert seen["applied"] > 0
    assert seen["duplicates"] > 0
    assert seen["dead_lettered"] > 0
    letters = read_topic(settings.kafka_bootstrap, topics.dlq, seen["dead_lettered"])
    assert len(letters) == seen["dead_lettered"]
    assert all(letter["reason"] for letter in letters)
