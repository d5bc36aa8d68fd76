"""Prometheus metrics of one API replica: latency and counts by route and status, index size."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The route template, never the path: paths hold user ids, and logs must not.
access = logging.getLogger("recstream.access")
REPLICA_HEADER = b"x-recstream-replica"
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Measure:
    """Plain ASGI middleware (no per-request task group, unlike `@app.middleware`): times and
    counts each request, and names the replica that answered in `X-Recstream-Replica`
    (host:pid), so that an operator can tell replicas apart behind a load balancer."""

    def __init__(self, app: ASGIApp, latency: Histogram, responses: Counter) -> None:
        self.app, self.latency, self.responses = app, latency, responses
        self.replica = (REPLICA_HEADER, f"{socket.gethostname()}:{os.getpid()}".encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), self.replica]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            seconds = time.perf_counter() - began
            self.latency.labels(scope["method"], route).observe(seconds)
            self.responses.labels(scope["method"], route, str(status)).inc()
            key = scope.get("state", {}).get("key_name", "-")
            access.info(
                "%s %s %d %.1fms key=%s", scope["method"], route, status, seconds * 1e3, key
            )


class _UserVectors(Collector):
    """How this process got the user vectors it could not read from Redis: prepared before
    a version switch, or made while a request waited (the fallback); and how many of those
    were for users it prepares for (the steady state: none)."""

    def __init__(self, counts: Callable[[], Mapping[str, int]], misses: Callable[[], int]) -> None:
        self._counts = counts
        self._misses = misses

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "recstream_api_user_vectors",
            "user vectors this process made: 'prepared' before serving a new version, "
            "'on_request' while a request waited",
            labels=["when"],
        )
        for when, count in self._counts().items():
            family.add_metric([when], count)
        yield family
        yield CounterMetricFamily(
            "recstream_api_prepared_user_misses",
            "requests of users this process prepares vectors for (asking again within "
            "RECSTREAM_PREPARE_WINDOW_S) that still waited for a forward pass: their event "
            "not yet re-embedded for the served version, or a switch beyond the cap",
            value=self._misses(),
        )


def install_metrics(
    app: FastAPI,
    index_size: Callable[[], float],
    model_version: Callable[[], float],
    user_vectors: Callable[[], Mapping[str, int]],
    prepared_misses: Callable[[], int],
) -> Histogram:
    """Time every request and serve `GET /metrics`; one registry per app, no globals.

    Returns the publish-latency histogram, for the feed follower to observe."""
    registry = CollectorRegistry()
    latency = Histogram(
        "recstream_http_request_seconds",
        "HTTP request latency",
        ["method", "route"],
        buckets=_BUCKETS,
        registry=registry,
    )
    responses = Counter(
        "recstream_http_responses",
        "HTTP responses",
        ["method", "route", "status"],
        registry=registry,
    )
    Gauge("recstream_index_items", "items in the vector index", registry=registry).set_function(
        index_size
    )
    Gauge(
        "recstream_served_model_version", "model version of the index (-1: none)", registry=registry
    ).set_function(model_version)
    publish_latency = Histogram(
        "recstream_publish_latency_seconds",
        "end of the training step that made a model version -> this replica serves it",
        buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
        registry=registry,
    )
    registry.register(_UserVectors(user_vectors, prepared_misses))
    app.add_middleware(_Measure, latency=latency, responses=responses)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return publish_latency
