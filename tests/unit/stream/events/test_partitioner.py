"""The SDK's partitioner puts each key where kafka-python's (and the Java client's) default
does, and the producer checksums its batches in C."""

from __future__ import annotations

import random

import pytest
from kafka.partitioner.default import DefaultPartitioner
from kafka.record import util

from stream.events.partitioner import KeyHashPartitioner


class _Cluster:
    """The metadata a partitioner reads: each topic's partitions, all with a leader."""

    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self._partitions = partitions

    def topics(self) -> set[str]:
        return set(self._partitions)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        found = self._partitions.get(topic)
        return None if found is None else set(found)

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions_for_topic(topic)


@pytest.mark.parametrize("partitions", [{0}, {0, 1, 2}, set(range(8)), set(range(12)), {0, 2, 5}])
def test_a_key_goes_to_the_default_partitioners_partition(partitions: set[int]) -> None:
    cluster = _Cluster({"clicks": partitions})
    ours, default = KeyHashPartitioner(keys=64), DefaultPartitioner()
    rng = random.Random(7)
    keys = [f"user-{rng.randrange(500)}".encode() for _ in range(2_000)]  # repeats: cache hits
    keys += [rng.randbytes(rng.randrange(0, 40)) for _ in range(500)]
    for key in keys:
        expected = default.partition("clicks", None, key, None, None, cluster)
        assert ours.partition("clicks", None, key, None, None, cluster) == expected


def test_an_unkeyed_record_goes_to_one_of_the_topics_partitions() -> None:
    cluster = _Cluster({"clicks": {0, 1, 2}})
    assert KeyHashPartitioner().partition("clicks", None, None, None, b"x", cluster) in {0, 1, 2}


def test_an_unknown_topic_is_refused_as_by_the_default() -> None:
    with pytest.raises(ValueError, match="not found"):
        KeyHashPartitioner().partition("orders", None, b"u", None, None, _Cluster({}))


def test_record_batches_are_checksummed_in_c() -> None:
    """kafka-python's pure-Python CRC-32C took 35% of a producing process's samples (and the
    GIL from the API's requests), so its C extra (`kafka-python[crc32c]`) is a dependency."""
    assert util.crc32c_c is not None
    data = memoryview(b"recstream" * 100)
    assert util.calc_crc32c(data) == util.crc32c_py(data)
