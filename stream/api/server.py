"""Entry point of an API process (uvicorn)."""

from __future__ import annotations

import uvicorn

from stream.api.app import create_api
from stream.config import Settings
from stream.startup import start_process


def run_api(settings: Settings) -> None:
    """Serve the HTTP API on `settings.api_host:api_port` until SIGTERM/SIGINT."""
    start_process(settings, configure_logging=False)  # uvicorn configures its logging
    uvicorn.run(
        create_api(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level,
        access_log=False,  # paths hold user ids; stream.api.metrics logs route templates
    )
