"""Python SDK for event producers: validate, then send to Kafka keyed by user (kafka-python)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka.producer.future import FutureRecordMetadata

from stream.config import Settings
from stream.events.event_time import EventTimeLimits
from stream.events.kafka_sockets import close_failed_sockets
from stream.events.partitioner import KeyHashPartitioner
from stream.events.pseudonyms import Pseudonyms
from stream.events.schema import ClickEvent, EventError, OrderEvent, validate_event
from stream.events.topics import TopicNames

close_failed_sockets()

log = logging.getLogger(__name__)

AnyEvent = ClickEvent | OrderEvent


class EventProducer:
    """Sends behaviour events with acks=all, retries and batching.

    Invalid events raise `EventError` before anything is sent. Delivery is at-least-once;
    the consumers de-duplicate by `event_id`, so a retried send never counts twice.
    """

    def __init__(self, settings: Settings, *, linger_ms: int = 5, **kafka_config: Any) -> None:
        self._settings = settings
        self._pseudonyms = Pseudonyms.of(settings.pseudonym_key)
        self._limits = EventTimeLimits.of(settings)
        self.topics = TopicNames.from_settings(settings)
        config: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap.split(","),
            "client_id": f"{settings.app_id}-producer",
            "acks": "all",
            "retries": 10,
            "retry_backoff_ms": 200,
            "linger_ms": linger_ms,
            "batch_size": 256 * 1024,
            "max_request_size": max(1024 * 1024, settings.max_event_bytes * 2),
            "request_timeout_ms": 30_000,
            "partitioner": KeyHashPartitioner(),
        }
        config.update(kafka_config)
        self._producer = KafkaProducer(**config)

    def _coerce(self, event: AnyEvent | Mapping[str, Any]) -> AnyEvent:
        valid = event if isinstance(event, ClickEvent | OrderEvent) else validate_event(event)
        self._limits.check(valid.ts_ms, int(time.time() * 1000))  # as the workers will
        return valid

    def send(self, event: AnyEvent | Mapping[str, Any]) -> FutureRecordMetadata:
        """Validate and send one event; returns the delivery future."""
        valid = self._coerce(event)
        if self._pseudonyms is not None:
            valid = valid.model_copy(update={"user_id": self._pseudonyms.user(valid.user_id)})
        payload = valid.to_json()
        if len(payload) > self._settings.max_event_bytes:
            limit = self._settings.max_event_bytes
            raise EventError(f"event of {len(payload)} bytes exceeds the {limit}-byte limit")
        return self._producer.send(
            self.topics.for_event_type(valid.type), value=payload, key=valid.user_id.encode()
        )

    def send_many(
        self, events: Iterable[AnyEvent | Mapping[str, Any]]
    ) -> list[FutureRecordMetadata]:
        """Validate every event first, then send them all (nothing is sent if one is invalid)."""
        valid = [self._coerce(e) for e in events]
        return [self.send(e) for e in valid]

    def send_raw(self, topic: str, payload: bytes, key: bytes | None) -> FutureRecordMetadata:
        """Forward bytes as they are (replay, bridges); consumers validate them."""
        return self._producer.send(topic, value=payload, key=key)

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every event sent so far is acknowledged by the broker."""
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float | None = 30.0) -> None:
        """Deliver what is buffered within `timeout_s`, then close; what is still undelivered
        then is dropped (the futures of its senders fail)."""
        try:
            self._producer.close(timeout=timeout_s)
        except KafkaTimeoutError:
            # kafka-python 3.0's close() raises from its flush while records are unsent and
            # then skips its own force close, leaving the I/O thread and its sockets behind
            log.warning("closing the producer: events undelivered after %ss dropped", timeout_s)
            sender = self._producer._sender
            if sender is not None:
                sender.force_close()
                sender.join(timeout=5)
            self._producer._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
