"""Retry calls to Redis while it is away: workers and the trainer wait, they do not crash."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)
T = TypeVar("T")


async def retrying(call: Callable[[], Awaitable[T]], max_backoff_s: float = 5.0) -> T:
    """Retry an infrastructure call (Redis down, timeouts) until it succeeds; other errors raise."""
    backoff = 0.05
    while True:
        try:
            return await call()
        except RETRYABLE as error:
            log.warning("Redis unavailable (%s); retrying in %.2fs", error, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
