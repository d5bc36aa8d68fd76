"""The key layout: one Redis keeps its names; a cluster's keys share a slot where a script
or a read needs them to (a user's keys, an item's keys, the control keys)."""

from __future__ import annotations

import re

import pytest
from redis.crc import key_slot

from store.redis_keys import RedisKeys


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


def test_one_redis_keeps_every_key_name_under_its_prefix() -> None:
    keys = RedisKeys("p:")
    assert keys.control is keys
    assert keys.for_user("u1") is keys
    assert keys.for_item("i1") is keys
    assert keys.every_shard() == [keys]
    assert keys.for_item("i1").item_vectors == "p:items:vectors"
    assert keys.for_user("u1").history("u1") == "p:user:u1:history"
    assert keys.control.item_feed == "p:items:feed"


def test_on_a_cluster_a_users_and_an_items_keys_each_share_one_slot() -> None:
    keys = RedisKeys("p:", shards=16)
    user = keys.for_user("u1")
    assert len({_slot(user.history("u1")), _slot(user.purchased("u1")), _slot(user.stats)}) == 1
    item = keys.for_item("i1")
    names = [item.item_vectors, item.item_versions, item.item_meta, item.item_tombstones]
    assert len({_slot(name) for name in [*names, item.staged_items("3:")]}) == 1
    control = keys.control
    names = [control.item_feed, control.model_version, control.pending_publishes]
    assert len({_slot(name) for name in [*names, control.trainer_lease]}) == 1


def test_on_a_cluster_items_spread_over_every_shard_and_the_shards_over_many_slots() -> None:
    keys = RedisKeys("p:", shards=16)
    shards = {keys.shard_of(f"item-{n}") for n in range(1_000)}
    assert shards == set(range(16))
    slots = {_slot(view.item_vectors) for view in keys.every_shard()}
    assert len(slots) == 16
    assert re.fullmatch(r"\{p:#\d+\}items:vectors", keys.for_item("x").item_vectors)


def test_negative_shards_are_refused() -> None:
    with pytest.raises(ValueError, match="shards must be >= 0"):
        RedisKeys("p:", shards=-1)
