"""The FastAPI application factory: `create_api(settings)`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Histogram

from store.index_sync import ServedVersion
from stream.api import demo_page, events, items, recommend
from stream.api.auth import KeyRing, require
from stream.api.body_limit import BodyLimit
from stream.api.errors import error_response, install_error_handlers
from stream.api.event_log import EventLog
from stream.api.metrics import install_metrics
from stream.api.openapi import ERRORS, install_openapi
from stream.api.replica import Serving, open_following, serving_of
from stream.config import Settings
from stream.errors import StreamError
from stream.events.pseudonyms import Pseudonyms

log = logging.getLogger(__name__)


class InsecureConfigError(StreamError, ValueError):
    """The API would start with every route open, and nobody asked for that."""


def _observe(histogram: Histogram, served: ServedVersion) -> None:
    if served.publish_latency_ms is not None:
        histogram.observe(served.publish_latency_ms / 1000)


def _user_vectors(serving: Serving) -> dict[str, int]:
    prepared = serving.prepared
    return {"prepared": prepared.prepared, "on_request": prepared.on_request}


def create_api(settings: Settings, listen_when_ready: bool = False) -> FastAPI:
    """The HTTP service: ingest, retrieval and item admin; resources open and close with it.

    `listen_when_ready`: start-up (and so listening) waits for the item index. A process
    sharing its port with others needs it: once it listens the kernel sends it a share of
    connections, which a loading index would answer 503. Alone on a port, a process listens
    at once and `/readyz` says when it can serve."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.event_log = EventLog(settings)  # connects on the first ingest request
        try:

            def install(serving: Serving) -> None:
                serving.follower.on_served = lambda served: _observe(publish_latency, served)
                app.state.serving = serving

            async with open_following(settings, install):
                if listen_when_ready:
                    log.info("loading the item index before taking connections")
                    await app.state.serving.follower.ready.wait()
                yield
        finally:
            app.state.event_log.close()

    app = FastAPI(title="recstream", version="0.1.0", lifespan=lifespan)
    app.state.keys = KeyRing.load(
        settings.api_keys,
        settings.keys_file_read,
        settings.api_key_rate_per_s,
        settings.api_key_burst,
    )
    app.state.pseudonyms = Pseudonyms.of(settings.pseudonym_key)
    app.state.repeats = settings.repeats
    if not app.state.keys.enabled:
        if not settings.insecure_open:
            raise InsecureConfigError(
                "no API keys configured (RECSTREAM_API_KEYS or RECSTREAM_API_KEYS_FILE; "
                "`recstream keys new` makes one): refusing to serve every route, admin "
                "included, to anyone. For a local demo, pass --insecure-open "
                "(RECSTREAM_INSECURE_OPEN=true)"
            )
        log.warning("--insecure-open: every endpoint, admin included, is open to anyone")
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_event_bytes, prefix="/v1/items")
    publish_latency = install_metrics(
        app,
        lambda: float(app.state.serving.index.size),
        lambda: float(app.state.serving.index.stamp.model_version or -1),
        lambda: _user_vectors(app.state.serving),
        lambda: app.state.serving.prepared.missed,
    )
    app.include_router(events.router, dependencies=[Depends(require("ingest"))], responses=ERRORS)
    app.include_router(recommend.router, dependencies=[Depends(require("read"))], responses=ERRORS)
    app.include_router(items.router, dependencies=[Depends(require("admin"))], responses=ERRORS)
    app.include_router(demo_page.router)
    install_openapi(app, {"events": "ingest", "recommendations": "read", "items": "admin"})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=None)
    async def readyz(request: Request) -> dict[str, object] | JSONResponse:
        """Readiness: the index is loaded and Redis answers."""
        serving = serving_of(request)
        try:
            await serving.client.ping()
        except Exception as error:  # the reason, not the address: internal hosts stay inside
            log.warning("readiness: Redis unreachable: %s", error)
            return error_response(503, f"Redis unreachable ({type(error).__name__})")
        if not serving.ready:
            return error_response(503, "the item index is still loading")
        return {"status": "ready", "index_items": serving.index.size}

    return app
