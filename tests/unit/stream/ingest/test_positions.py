"""When the worker rewinds to Redis's applied offsets, and when it must not."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import cast

from faust.types import TP, Message
from redis.exceptions import ConnectionError as RedisConnectionError

from store.interaction_store import PartitionAdvance, RedisInteractionStore
from stream.ingest.positions import AppliedPositions


class _Offsets:
    """Just the applied offsets of a store."""

    def __init__(self, held: dict[str, int], shards: int = 0) -> None:
        self.held = held
        self.shards = shards

    def offset_fields(self, partition: str) -> list[str]:
        return [f"{g}|{partition}" for g in range(self.shards)] if self.shards else [partition]

    async def applied_offsets(self, partitions: Sequence[str]) -> dict[str, int]:
        return {p: self.held[p] for p in partitions if p in self.held}


def _positions(held: dict[str, int]) -> tuple[AppliedPositions, list[str]]:
    positions = AppliedPositions()
    positions.use(cast(RedisInteractionStore, _Offsets(held)))
    rejoins: list[str] = []

    async def rejoin() -> None:
        rejoins.append("rejoin")

    positions.on_rewind(rejoin)
    positions.advanced([PartitionAdvance("t/0", None, 10), PartitionAdvance("t/1", None, 5)])
    return positions, rejoins


def test_offsets_ahead_of_the_expected_ones_are_a_batch_in_flight_not_a_rewind() -> None:
    positions, rejoins = _positions({"t/0": 12, "t/1": 5})  # a batch's script wrote 12
    asyncio.run(positions.check())
    assert (positions.rewinding, rejoins) == (False, [])


def test_offsets_behind_or_missing_mean_redis_went_back_and_the_worker_rewinds() -> None:
    for held in ({"t/0": 7, "t/1": 5}, {"t/1": 5}):
        positions, rejoins = _positions(held)
        asyncio.run(positions.check())
        assert (positions.rewinding, rejoins) == (True, ["rejoin"])


class _Flaky(_Offsets):
    """A store whose Redis does not answer until told."""

    away = True

    async def applied_offsets(self, partitions: Sequence[str]) -> dict[str, int]:
        if self.away:
            raise RedisConnectionError("Redis is away")
        return await super().applied_offsets(partitions)


def test_an_assignment_while_redis_is_away_resumes_from_kafka_and_checks_redis_later() -> None:
    """The seek cannot wait for Redis (the rebalance would time out): it keeps Kafka's
    committed offsets, and expects Redis to hold at least the offset before them, so a Redis
    that comes back with less still makes the worker rewind."""
    store = _Flaky({"t/0": 7})
    positions = AppliedPositions()
    positions.use(cast(RedisInteractionStore, store))
    tp = TP("t", 0)
    resumed = asyncio.run(positions.resume_offsets([tp], committed={tp: 11}))
    assert (resumed, positions.rewinding) == ({}, False)
    store.away = False  # back, but behind what Kafka says was applied
    asyncio.run(positions.check())
    assert positions.rewinding


def test_on_a_cluster_each_shard_is_expected_at_its_own_offset_and_the_one_behind_leads() -> None:
    """A batch some of whose shards were written before a crash: the partition is read again
    from the shard behind, and each shard's script is told what that shard holds."""
    store = _Offsets({"0|t/0": 9, "1|t/0": 6}, shards=2)
    positions = AppliedPositions()
    positions.use(cast(RedisInteractionStore, store))
    tp = TP("t", 0)
    assert asyncio.run(positions.resume_offsets([tp])) == {tp: 7}
    message = cast(Message, SimpleNamespace(topic="t", partition=0, offset=9))
    advances = positions.advances([message])
    assert advances == [PartitionAdvance("0|t/0", 9, 9), PartitionAdvance("1|t/0", 6, 9)]
    positions.advanced(advances)
    store.held.update({"0|t/0": 9, "1|t/0": 9})
    asyncio.run(positions.check())
    assert not positions.rewinding
    store.held["1|t/0"] = 6  # that shard's primary came back from an older snapshot
    asyncio.run(positions.check())
    assert positions.rewinding
