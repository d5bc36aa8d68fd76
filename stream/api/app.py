"""The FastAPI application factory: `create_api(settings)`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from stream.api import ingest
from stream.api.errors import install_error_handlers
from stream.config import Settings
from stream.producer import EventProducer
from stream.topics import ensure_topics


def create_api(settings: Settings) -> FastAPI:
    """The HTTP service; the Kafka producer opens with the app and closes with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_topics(settings)
        app.state.producer = EventProducer(settings)
        try:
            yield
        finally:
            app.state.producer.close()

    app = FastAPI(title="recstream", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(ingest.router)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    return app
