"""Topic names and their creation at start-up (plain Kafka admin protocol)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from stream.config import Settings
from stream.events.kafka_sockets import close_failed_sockets

close_failed_sockets()

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The topics recstream reads and writes."""

    clicks: str
    orders: str
    dlq: str

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicNames:
        p = settings.topic_prefix
        return cls(clicks=f"{p}clicks", orders=f"{p}orders", dlq=f"{p}dlq")

    @property
    def ingest(self) -> tuple[str, str]:
        """Topics the ingest agents consume."""
        return (self.clicks, self.orders)

    def for_event_type(self, event_type: str) -> str:
        """The topic an event of `event_type` is produced to."""
        return {"click": self.clicks, "order": self.orders}[event_type]

    def all(self) -> tuple[str, str, str]:
        return (self.clicks, self.orders, self.dlq)


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create missing topics; returns the names created now."""
    names = TopicNames.from_settings(settings)
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.app_id}-admin",
        request_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),
    )
    try:
        existing = set(admin.list_topics())
        missing = [t for t in names.all() if t not in existing]
        created: list[str] = []
        for topic in missing:
            try:
                admin.create_topics(
                    [NewTopic(topic, settings.partitions, settings.replication_factor)],
                    timeout_ms=int(timeout_s * 1000),
                )
                created.append(topic)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics %s with %d partitions", created, settings.partitions)
        return created
    finally:
        admin.close()
