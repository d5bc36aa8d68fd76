"""`GET /demo`: one static page (no build step, no CDN) to watch the service learn: a user's
top-k with score, reason and model version; clicking an item sends a click and shows how
long the recommendations took to reflect it; similar items; ingest rate and model version.

The page holds no key: it asks for one (or reads `#key=` from its URL, which browsers never
send to the server) and calls the API with it like any client.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@cache
def _page() -> str:
    return resources.files("stream.api").joinpath("demo.html").read_text(encoding="utf-8")


@router.get("/demo", include_in_schema=False)
async def demo() -> HTMLResponse:
    """The live demo page."""
    return HTMLResponse(_page(), headers={"Cache-Control": "no-cache"})
