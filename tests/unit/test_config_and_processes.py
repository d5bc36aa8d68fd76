"""Settings come from RECSTREAM_* variables and travel to child processes unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import Settings
from stream.events.topics import TopicNames
from stream.local.processes import settings_env
from stream.local.stack import StackState


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


def test_child_processes_get_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(topic_prefix="x.", history_len=7, data_dir=Path("/tmp/d"))
    for name, value in settings_env(original).items():
        if name.startswith("RECSTREAM_"):
            monkeypatch.setenv(name, value)
    assert Settings() == original


def test_topic_names_follow_the_prefix() -> None:
    names = TopicNames.from_settings(Settings(topic_prefix="shop1."))
    assert names.all() == ("shop1.clicks", "shop1.orders", "shop1.dlq")
    assert names.for_event_type("order") == "shop1.orders"


def test_stack_up_prints_lines_a_shell_can_eval() -> None:
    state = StackState("127.0.0.1:5555", "redis://127.0.0.1:6379/0", 10, None)
    assert state.shell_exports().splitlines() == [
        "export RECSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:5555",
        "export RECSTREAM_REDIS_URL=redis://127.0.0.1:6379/0",
    ]


def test_a_namespace_has_its_own_key_prefix_and_model_directory() -> None:
    base = Settings(redis_prefix="rs:", model_dir=Path("/m"))
    shadow = base.in_namespace("b2")
    assert (base.keys_prefix, base.checkpoint_dir) == ("rs:", Path("/m"))
    assert (shadow.keys_prefix, shadow.checkpoint_dir) == ("rs:ns:b2:", Path("/m/namespaces/b2"))
    assert shadow.redis_prefix == "rs:"  # where the serving pointer lives
    assert shadow.in_namespace("").keys_prefix == "rs:"
    with pytest.raises(ValueError, match="bad namespace name"):
        base.in_namespace("../etc")
