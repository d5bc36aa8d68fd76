"""`recstream model rollback V` against a running trainer: V's model is published at once as a
new version (versions only grow), the trainer resumes from V's stream position, and the
events after V are learned again, none lost."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from store.redis_keys import RedisKeys
from store.vector_state import RedisVectorState
from stream.config import Settings
from stream.events.producer import EventProducer
from stream.events.samples import sample_events
from stream.ops.model_versions import RollbackError, list_versions, request_rollback
from tests.conftest import Processes, wait_until
from tests.faults.conftest import events_learned

pytestmark = pytest.mark.integration


def _served(settings: Settings, version: int | None = None) -> tuple[int, dict[str, object]]:
    """The served version (or `version`) and what its publisher recorded of it."""

    async def read() -> tuple[int, dict[str, object]]:
        client = aioredis.from_url(settings.redis_url)
        try:
            state = RedisVectorState(client, RedisKeys(settings.keys_prefix), settings.vector_dim)
            chosen = version or await state.model_version() or 0
            return chosen, await state.model_info(chosen)
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_a_rollback_serves_the_old_model_as_a_new_version_and_relearns_what_came_after(
    settings: Settings,
) -> None:
    # every version carries the full state, so the version served after 600 events is one
    # the trainer can return to (with the default, only one a minute is)
    settings = settings.model_copy(
        update={"publish_interval_s": 0.3, "vector_dim": 32, "checkpoint_state_s": 0.0}
    )
    events = list(sample_events(1_000, users=100, items=150, seed=47))
    processes = Processes()
    try:
        processes.start("trainer", settings)
        with EventProducer(settings) as producer:
            for event in events[:600]:
                producer.send(event)
            producer.flush()
            wait_until(lambda: events_learned(settings) == 600, 90, "600 events learned")
            old, _ = _served(settings)
            for event in events[600:]:
                producer.send(event)
            producer.flush()
            wait_until(lambda: events_learned(settings) == 1_000, 90, "1,000 events learned")
            newest, _ = _served(settings)
        with pytest.raises(RollbackError, match="not on disk"):
            request_rollback(settings, 10_000)
        back = request_rollback(settings, old)
        assert back > newest  # versions only grow
        _, info = _served(settings, back)
        assert info["rolled_back_from"] == old
        assert info["events_learned"] == 600
        rows = {row.version: row for row in list_versions(settings)}
        assert old in rows
        assert back in rows
        wait_until(lambda: events_learned(settings) == 1_000, 90, "the 400 learned again")
        assert _served(settings)[0] > back
    finally:
        processes.stop_all()
