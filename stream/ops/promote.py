"""`recstream promote NAME` and `recstream rollback`: switch the serving namespace atomically,
then bring the namespace now serving up to date with what the log received since it was last
complete (replay is idempotent, so the overlap is free)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from store.namespaces import Switch
from stream.config import Settings
from stream.ops.replay_kafka import replay_kafka
from stream.wiring import namespace_registry, redis_client

CATCH_UP_MARGIN_MS = 60_000  # clock skew between the producers' and this machine's clocks
FOLLOW_S = 3.0  # how long processes take to notice a switch (they look every 0.5 s)


def switch(settings: Settings, name: str | None, *, progress: bool = True) -> Switch:
    """Promote `name` (None: roll back), then bring the namespace now serving up to date
    with what the log received since it last was complete (idempotent, so overlap is free)."""
    done = asyncio.run(_switch(settings, name))
    if done.changed:
        time.sleep(FOLLOW_S)  # let workers move to the new namespace before catching up
        record = asyncio.run(_record(settings, done.after)) or {}
        since = int(record.get("complete_ms", 0)) - CATCH_UP_MARGIN_MS
        # the log since then never reached that namespace: no record there to outlive
        target = settings.in_namespace(done.after)
        replay_kafka(target, max(since, 0), progress=progress, past_horizon=True)
    return done


async def _switch(settings: Settings, name: str | None) -> Switch:
    client = redis_client(settings)
    try:
        registry = namespace_registry(settings, client)
        return await (registry.rollback() if name is None else registry.promote(name))
    finally:
        await client.aclose()


async def _record(settings: Settings, name: str) -> dict[str, Any] | None:
    client = redis_client(settings)
    try:
        return await namespace_registry(settings, client).record(name)
    finally:
        await client.aclose()
