"""The API's way into Kafka, kept apart from everything else a replica does: the producer is
made on first use (a replica starts and serves reads while Kafka is away), sends run on a small
executor of its own (a full producer buffer never starves the searches and re-embeds of the
shared thread pool), every wait is bounded, and past its capacity ingest is refused at once."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kafka.errors import KafkaError

from stream.config import Settings
from stream.errors import StreamError
from stream.events.producer import EventProducer
from stream.events.topics import ensure_topics

log = logging.getLogger(__name__)
T = TypeVar("T")

SENDERS = 4  # threads that talk to Kafka; as many requests more may wait for one
TIMEOUT_S = 5.0  # longest one request waits on Kafka (buffer space, metadata, acks)


class EventLogUnavailableError(StreamError):
    """Kafka cannot take events now; the caller may retry (event ids make it safe)."""


def _probe(bootstrap: str, timeout_s: float) -> None:
    """Raise `EventLogUnavailableError` at once when no bootstrap server takes a TCP connection
    (a Kafka client built against none waits its whole timeout, and leaks sockets when its
    constructor gives up)."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host or "localhost", int(port)), timeout_s).close()
            return
        except (OSError, ValueError):
            continue
    raise EventLogUnavailableError(f"no broker answers at {len(bootstrap.split(','))} address(es)")


class EventLog:
    """A producer for HTTP ingest: lazily connected, on its own threads, bounded."""

    def __init__(
        self, settings: Settings, senders: int = SENDERS, timeout_s: float = TIMEOUT_S
    ) -> None:
        self.settings, self.timeout_s = settings, timeout_s
        self._executor = ThreadPoolExecutor(senders, thread_name_prefix="event-log")
        self._slots = threading.BoundedSemaphore(2 * senders)
        self._producer: EventProducer | None = None
        self._connecting = threading.Lock()

    async def call(self, work: Callable[[EventProducer], T]) -> T:
        """`work(producer)` on a sender thread, within `timeout_s` of Kafka time; raises
        `EventLogUnavailableError` when Kafka cannot be reached or answer, or too many requests
        already wait for it."""
        if not self._slots.acquire(blocking=False):
            raise EventLogUnavailableError("too many ingest requests wait for the event log")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._run, work)
        finally:
            self._slots.release()

    def _run(self, work: Callable[[EventProducer], T]) -> T:
        try:
            return work(self._connected())
        except KafkaError as error:
            raise EventLogUnavailableError(type(error).__name__) from error

    def _connected(self) -> EventProducer:
        with self._connecting:
            if self._producer is None:
                _probe(self.settings.kafka_bootstrap, self.timeout_s)
                ensure_topics(self.settings, timeout_s=self.timeout_s)
                self._producer = EventProducer(self.settings, **self._bounded())
                log.info("connected to the event log at %s", self.settings.kafka_bootstrap)
            return self._producer

    def _bounded(self) -> dict[str, Any]:
        """kafka-python waits up to a minute by default; here no wait outlasts `timeout_s`."""
        ms = int(self.timeout_s * 1000)
        return {
            "max_block_ms": ms,
            "request_timeout_ms": ms,
            "bootstrap_timeout_ms": ms,
            "delivery_timeout_ms": ms + 1_000,  # >= linger + request timeout
        }

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._producer is not None:
            self._producer.close(timeout_s=self.timeout_s)  # the rest was answered 503
