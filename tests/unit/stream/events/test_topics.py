"""Topic names follow the configured prefix."""

from __future__ import annotations

from stream.config import Settings
from stream.events.topics import TopicNames


def test_topic_names_follow_the_prefix() -> None:
    names = TopicNames.from_settings(Settings(topic_prefix="shop1."))
    assert names.all() == ("shop1.clicks", "shop1.orders", "shop1.dlq")
    assert names.for_event_type("order") == "shop1.orders"
