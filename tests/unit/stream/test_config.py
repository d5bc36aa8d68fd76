"""Settings come from RECSTREAM_* variables, fail loudly when invalid, and pin namespaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import Settings


def test_settings_read_recstream_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTREAM_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("RECSTREAM_PARTITIONS", "12")
    made = Settings()
    assert made.kafka_bootstrap == "k1:9092,k2:9092"
    assert made.partitions == 12


def test_invalid_settings_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTREAM_PARTITIONS", "0")
    with pytest.raises(ValueError, match="partitions"):
        Settings()


def test_a_namespace_has_its_own_key_prefix_and_model_directory() -> None:
    base = Settings(redis_prefix="rs:", model_dir=Path("/m"))
    shadow = base.in_namespace("b2")
    assert (base.keys_prefix, base.checkpoint_dir) == ("rs:", Path("/m"))
    assert (shadow.keys_prefix, shadow.checkpoint_dir) == ("rs:ns:b2:", Path("/m/namespaces/b2"))
    assert shadow.redis_prefix == "rs:"  # where the serving pointer lives
    assert shadow.in_namespace("").keys_prefix == "rs:"
    with pytest.raises(ValueError, match="bad namespace name"):
        base.in_namespace("../etc")


def test_api_processes_share_the_exact_index_unless_told_otherwise() -> None:
    assert not Settings().shares_index
    assert Settings(api_processes=2).shares_index
    assert not Settings(api_processes=2, index_shared=False).shares_index
    assert not Settings(api_processes=2, index_factory="IDMap2,HNSW32").shares_index
    assert Settings(index_shared=True).shares_index
    assert Settings(index_shared=True).index_snapshot_dir != Settings().index_snapshot_dir
    with pytest.raises(ValueError, match="index_shared maps an exact index"):
        Settings(index_shared=True, index_factory="IDMap2,HNSW32")
