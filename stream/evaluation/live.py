"""The prequential protocol through the running service: before each event is produced to
Kafka, the HTTP API is asked for that user's top-k, once it reflects the user's previous
event. Also measures freshness (produced -> reflected) and model publish latency."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tqdm import tqdm

from model.evaluation import SystemScore
from model.interaction import Interaction
from stream.events.producer import EventProducer
from stream.events.samples import wire_event
from stream.events.schema import ClickEvent, OrderEvent

_REFLECT_TIMEOUT_S = 3.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q` quantile (nearest rank) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class LiveFigures:
    """What a live run measured."""

    score: SystemScore = field(default_factory=lambda: SystemScore("live"))
    scored: int = 0
    stale: int = 0
    freshness_ms: list[float] = field(default_factory=list)
    publish_latency_ms: dict[int, float] = field(default_factory=dict)
    sources: dict[str, list[int]] = field(default_factory=dict)
    model_lag: list[int] = field(default_factory=list)

    @property
    def freshness_p50_ms(self) -> float | None:
        return percentile(self.freshness_ms, 0.5)

    @property
    def freshness_p99_ms(self) -> float | None:
        return percentile(self.freshness_ms, 0.99)

    @property
    def publish_latency_p50_ms(self) -> float | None:
        values = list(self.publish_latency_ms.values())
        return statistics.median(values) if values else None


def event_of(number: int, interaction: Interaction) -> ClickEvent | OrderEvent:
    """The wire event of one logged interaction (an order of one line for an order)."""
    return wire_event(f"demo-{number:08d}", [interaction])


class LiveEvaluation:
    """Drives one prequential pass through the API at `base_url` and the producer."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        producer: EventProducer,
        reflects: Callable[[str, str], Awaitable[bool]],
        k: int = 10,
        window: int = 256,
        probe_every: int = 20,
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.producer = producer
        self.reflects = reflects
        self.k = k
        self.window = window
        self.probe_every = probe_every
        self.figures = LiveFigures()
        self._last_event: dict[str, str] = {}
        self._produced = 0
        self._served_learned = 0
        self._touched: dict[str, set[str]] = {}

    async def recommend(
        self, user_id: str, exclude: set[str], now_ms: int | None = None
    ) -> dict[str, Any]:
        """The API's top-k for `user_id`, ranked as of `now_ms` (the event's time: recorded
        events replay as they happened, as the offline evaluation scores them)."""
        params = {"k": str(self.k)}
        if now_ms is not None:
            params["now_ms"] = str(now_ms)
        if exclude:
            params["exclude"] = ",".join(sorted(exclude))
        url = f"{self.base_url}/v1/users/{user_id}/recommendations"
        async with self.session.get(url, params=params) as response:
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            return body

    def learn_without_scoring(
        self, numbered: Sequence[tuple[int, Interaction]], producer: EventProducer
    ) -> None:
        """Warm-up: produce events (through a batching `producer`), nothing is scored."""
        for number, event in numbered:
            self._note(number, event)
            producer.send(event_of(number, event))
        producer.flush()

    def _note(self, number: int, event: Interaction) -> None:
        self._produced += 1
        self._last_event[event.user_id] = f"demo-{number:08d}"
        self._touched.setdefault(event.user_id, set()).add(event.item_id)

    async def _reflected(self, user_id: str, now_ms: int) -> dict[str, Any]:
        """Recommendations once they reflect the user's last produced event (or a timeout).

        The wait watches the user's vector in Redis (what the API reads), not the API: polling
        the API itself would load it with many requests per event."""
        expected = self._last_event.get(user_id)
        if expected is not None:
            deadline = time.monotonic() + _REFLECT_TIMEOUT_S
            pause = 0.001
            while not await self.reflects(user_id, expected):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.01)
        body = await self.recommend(user_id, self._touched.get(user_id, set()), now_ms)
        if expected is not None and body["as_of_event_id"] != expected:
            self.figures.stale += 1
        return body

    async def _score(self, event: Interaction) -> None:
        repeat = event.item_id in self._touched.get(event.user_id, set())
        body = await self._reflected(event.user_id, event.ts_ms)
        if repeat:
            return
        self.figures.model_lag.append(self._produced - self._served_learned)
        ranked = [item["item_id"] for item in body["items"]][: self.k]
        self.figures.score.score(ranked, event.item_id)
        self.figures.scored += 1
        tally = self.figures.sources.setdefault(body["source"], [0, 0])
        tally[0] += 1
        tally[1] += event.item_id in ranked

    async def _probe(self, user_id: str, event_id: str, produced: float) -> None:
        deadline = produced + _REFLECT_TIMEOUT_S
        while time.monotonic() < deadline:
            body = await self.recommend(user_id, set())
            if body["as_of_event_id"] == event_id:
                self.figures.freshness_ms.append((time.monotonic() - produced) * 1000)
                return
            await asyncio.sleep(0.001)

    async def _one(self, number: int, event: Interaction, after: asyncio.Task[None] | None) -> None:
        """Ask for the user's top-k (once their previous event is reflected), score, produce."""
        if after is not None:
            await after
        await self._score(event)
        self._note(number, event)
        produced = time.monotonic()
        self.producer.send(event_of(number, event))
        if number % self.probe_every == 0:
            await self._probe(event.user_id, self._last_event[event.user_id], produced)

    async def run(self, events: Sequence[Interaction], start: int) -> LiveFigures:
        """Score events[start:] test-then-produce, with a progress bar.

        Each user's events go strictly in turn: ask, score, produce, wait until the API
        reflects it, then the user's next. Different users overlap, at most `window` events
        apart in time order, so Kafka sees each user's events in order and all events within
        `window` of their time position (as offline micro-batches do)."""
        watcher = asyncio.create_task(self._watch_publishes())
        bar = tqdm(total=len(events) - start, desc="live", unit="ev", file=sys.stderr)
        in_flight: deque[asyncio.Task[None]] = deque()
        last_of_user: dict[str, asyncio.Task[None]] = {}
        try:
            for number in range(start, len(events)):
                while len(in_flight) >= self.window:
                    await in_flight.popleft()
                    self._progress(bar)
                event = events[number]
                task = asyncio.create_task(
                    self._one(number, event, last_of_user.get(event.user_id))
                )
                last_of_user[event.user_id] = task
                in_flight.append(task)
            while in_flight:
                await in_flight.popleft()
                self._progress(bar)
            self.producer.flush()
        finally:
            for task in in_flight:
                task.cancel()
            bar.close()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        return self.figures

    def _progress(self, bar: tqdm[Any]) -> None:
        bar.update(1)
        if bar.n % 100 == 0:
            hits = self.figures.score.hits / max(self.figures.scored, 1)
            bar.set_postfix({"hr@10": f"{hits:.3f}"}, refresh=False)

    async def _watch_publishes(self) -> None:
        """Note each model version the replica switches to, with its publish latency."""
        while True:
            async with self.session.get(f"{self.base_url}/v1/model") as response:
                body = await response.json()
            version, latency = body.get("model_version"), body.get("publish_latency_ms")
            self._served_learned = body.get("events_learned") or self._served_learned
            if version is not None and latency is not None:
                self.figures.publish_latency_ms.setdefault(int(version), float(latency))
            await asyncio.sleep(0.05)
