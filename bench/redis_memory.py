"""Redis bytes per stored thing: idempotency records (against a key per event id, the
simplest layout, as the baseline in the same run), history entries and user vectors.

    python bench/redis_memory.py [--events 500000] [--db 14]

The records of `--events` events in one idempotency period: 500,000 is ~3,000 events an hour
at the default 7-day horizon, 16M fills the 65,536 buckets' compact intsets.

Uses its own Redis database index and empties it before and after (FLUSHDB).
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from urllib.parse import urlsplit

import numpy as np
import redis
import redis.asyncio as aioredis
from tqdm import tqdm

from store.interaction_store import RedisInteractionStore, event_fingerprint
from store.redis_keys import RedisKeys
from store.vector_state import RedisVectorState, UserVector, UserVectorUpdate
from stream.config import Settings
from stream.events.handlers import effect_of
from stream.events.samples import sample_events


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _per_event(client: redis.Redis, n: int, key_per_id: bool) -> float:
    """Bytes per event of `n` idempotency records of 36-character ids within one period."""
    client.flushdb()
    before = _used(client)
    keys = RedisKeys("bench:")
    pipe = client.pipeline(transaction=False)
    for number in tqdm(range(n), desc="key per id" if key_per_id else "fingerprints"):
        event_id = str(uuid.UUID(int=number))
        if key_per_id:
            pipe.set(f"bench:seen:{event_id}", "1", nx=True, ex=604_800)
        else:
            bucket, fingerprint = event_fingerprint(event_id)
            key = keys.seen_events(2_945, bucket)
            pipe.sadd(key, fingerprint, fingerprint ^ 0x5BD1E995)  # id's, id-and-content's
            pipe.expire(key, 604_800)
        if number % 5_000 == 4_999:
            pipe.execute()
    pipe.execute()
    return (_used(client) - before) / n


async def _user_state(url: str) -> tuple[float, float]:
    """Bytes per history entry and per user vector, from MEMORY USAGE."""
    client = aioredis.from_url(url)
    keys = RedisKeys("bench:")
    try:
        store = RedisInteractionStore(client, keys)
        effects = [effect_of(e) for e in sample_events(20_000, users=100, items=2_000, seed=3)]
        for start in range(0, len(effects), 200):
            await store.apply_many(effects[start : start + 200])
        histories = [k async for k in client.scan_iter(match="bench:user:*:history")]
        entries = sum([await client.zcard(k) for k in histories])
        history_bytes = sum([await client.memory_usage(k, samples=0) or 0 for k in histories])
        dim = Settings().vector_dim
        vector = UserVector(np.ones(dim, np.float32), 12_345, 1_780_000_000_000, "s3-00012345")
        state = RedisVectorState(client, keys, dim)
        await state.put_user_vectors([UserVectorUpdate(f"u{n}", vector) for n in range(100)])
        vectors = [k async for k in client.scan_iter(match="bench:user:*:vector")]
        vector_bytes = sum([await client.memory_usage(k, samples=0) or 0 for k in vectors])
        return history_bytes / entries, vector_bytes / len(vectors)
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--db", type=int, default=14, help="a Redis database index to use up")
    args = parser.parse_args()
    url = urlsplit(Settings().redis_url)._replace(path=f"/{args.db}").geturl()
    client = redis.Redis.from_url(url)
    try:
        baseline = _per_event(client, args.events, key_per_id=True)
        compact = _per_event(client, args.events, key_per_id=False)
        client.flushdb()
        history, vector = asyncio.run(_user_state(url))
    finally:
        client.flushdb()
        client.close()
    print(f"idempotency record, key per event id (baseline): {baseline:7.1f} B/event")
    print(f"idempotency record, fingerprints in a bucket:    {compact:7.1f} B/event")
    print(f"  ratio: {baseline / compact:.1f}x smaller")
    print(f"history entry: {history:.0f} B   user vector: {vector:.0f} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
