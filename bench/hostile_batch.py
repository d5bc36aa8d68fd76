"""The slowest apply script Redis runs for a hostile batch, beside an ordinary batch as the
floor measured in the same run (aim: under 10 ms; Redis answers nobody else meanwhile).

    python bench/hostile_batch.py [--orders 500] [--lines 500] [--db 13]

Hostile: users whose histories are full get orders of `--lines` lines each, dated before
every entry they hold (a late replay), in one batch of `--orders` events. Ordinary: the same
number of one-line clicks dated now. Times are Redis's own (SLOWLOG, every command over
0.5 ms during the run: Redis 7 logs the commands a script calls too, so a threshold of 0 would
slow the scripts it measures; the previous settings are restored after). Uses its own Redis
database index and empties it before and after (FLUSHDB).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis

from model.interaction import EventEffect, Interaction
from store.interaction_store import MAX_WORK_PER_SCRIPT, RedisInteractionStore
from store.redis_keys import RedisKeys
from stream.config import Settings

USERS = 50


def _full_histories(history_len: int, now_ms: int) -> list[EventEffect]:
    return [
        EventEffect(f"h{u}-{n}", f"u{u}", (Interaction(f"u{u}", f"i{n}", "click", now_ms - n),))
        for u in range(USERS)
        for n in range(history_len)
    ]


def _hostile(orders: int, lines: int, now_ms: int) -> list[EventEffect]:
    old = now_ms - 86_400_000
    return [
        EventEffect(
            f"o{n}",
            f"u{n % USERS}",
            tuple(
                Interaction(f"u{n % USERS}", f"i{n}-{k}", "order", old - k, 1) for k in range(lines)
            ),
        )
        for n in range(orders)
    ]


def _ordinary(events: int, now_ms: int) -> list[EventEffect]:
    return [
        EventEffect(
            f"c{n}", f"u{n % USERS}", (Interaction(f"u{n % USERS}", f"i{n}", "click", now_ms),)
        )
        for n in range(events)
    ]


def _script_ms(client: redis.Redis, run: object) -> list[float]:
    """How long each EVALSHA over 0.5 ms took while `run` ran, in ms, slowest last."""
    client.slowlog_reset()
    asyncio.run(run)  # type: ignore[arg-type]
    entries = [e for e in client.slowlog_get(100_000) if e["command"][:8].upper() == b"EVALSHA "]
    return sorted(e["duration"] / 1000 for e in entries) or [0.0]


async def _apply(url: str, effects: list[EventEffect], batch: int) -> None:
    client = aioredis.from_url(url)
    try:
        store = RedisInteractionStore(client, RedisKeys("bench:"))
        for start in range(0, len(effects), batch):
            await store.apply_many(effects[start : start + batch])
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--db", type=int, default=13, help="a Redis database index to use up")
    args = parser.parse_args()
    settings = Settings()
    url = urlsplit(settings.redis_url)._replace(path=f"/{args.db}").geturl()
    client = redis.Redis.from_url(url)
    threshold = str(client.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"])
    size = str(client.config_get("slowlog-max-len")["slowlog-max-len"])
    now_ms = int(time.time() * 1000)
    try:
        client.flushdb()
        client.config_set("slowlog-log-slower-than", 500)
        client.config_set("slowlog-max-len", 100_000)
        asyncio.run(_apply(url, _full_histories(settings.history_len, now_ms), 500))
        floor = _script_ms(client, _apply(url, _ordinary(args.orders, now_ms), args.orders))[-1]
        times = _script_ms(
            client, _apply(url, _hostile(args.orders, args.lines, now_ms), args.orders)
        )
    finally:
        client.config_set("slowlog-log-slower-than", threshold)
        client.config_set("slowlog-max-len", size)
        client.flushdb()
        client.close()
    print(f"ordinary batch ({args.orders} clicks): slowest script {floor:.2f} ms (the floor)")
    hostile = times[-1]
    print(
        f"hostile batch ({args.orders} late orders x {args.lines} lines into full histories, "
        f"scripts of <= {MAX_WORK_PER_SCRIPT:,} work; {len(times)} took over 0.5 ms): median "
        f"{times[len(times) // 2]:.2f} ms, p99 {times[int(len(times) * 0.99)]:.2f} ms, slowest "
        f"{hostile:.2f} ms = {hostile / floor:.1f}x the floor (aim: under 10 ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
