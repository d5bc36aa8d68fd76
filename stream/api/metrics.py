"""Prometheus metrics of one API replica: latency and counts by route and status, index size."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def install_metrics(app: FastAPI, index_size: Callable[[], float]) -> None:
    """Time every request and serve `GET /metrics`; one registry per app, no globals."""
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

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        began = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        latency.labels(request.method, path).observe(time.perf_counter() - began)
        responses.labels(request.method, path, str(response.status_code)).inc()
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
