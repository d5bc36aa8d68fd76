"""`GET /v1/users/{user_id}/recommendations` and `GET /v1/items/{item_id}/similar`."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from store.retrieval import Filters, Scored, UnknownItemError
from stream.api.replica import Serving, serving_of
from stream.events.pseudonyms import Pseudonyms

router = APIRouter(prefix="/v1", tags=["recommendations"])

K = Annotated[int, Query(ge=1, le=500, description="how many items")]
Category = Annotated[str | None, Query(max_length=200, description="only this category")]
InStock = Annotated[bool | None, Query(description="only items in stock")]
Exclude = Annotated[str, Query(max_length=20_000, description="comma-separated item ids")]


class ScoredOut(BaseModel):
    item_id: str
    score: float
    reason: str


class RecommendationsOut(BaseModel):
    user_id: str
    items: list[ScoredOut]
    source: str
    model_version: int | None = Field(
        description="the one model version that scored every model-ranked item (None: none)"
    )
    as_of_event_id: str = Field(description="the newest event of the user the ranking reflects")


class ModelOut(BaseModel):
    model_version: int | None
    served_since_ms: int | None
    publish_latency_ms: int | None = Field(
        description="end of the training step that made this version -> served here"
    )
    events_learned: int | None = Field(description="events the served version has learned")
    index_items: int
    namespace: str = Field(description="namespace served ('': the base; see recstream promote)")


class StatsOut(BaseModel):
    events_applied: int = Field(description="events ingest has applied (each once)")
    events_duplicate: int = Field(description="events ingest found already applied")
    events_dead_lettered: int = Field(description="events ingest refused, with a reason")
    model_version: int | None = Field(description="the version this replica serves")
    events_learned: int | None = Field(description="events the served version has learned")
    index_items: int


class SimilarOut(BaseModel):
    item_id: str
    items: list[ScoredOut]


def _ready(request: Request) -> Serving:
    serving = serving_of(request)
    if not serving.ready:
        raise HTTPException(503, "the item index is still loading")
    return serving


def _items(items: list[Scored]) -> list[dict[str, object]]:
    return [{"item_id": s.item_id, "score": float(s.score), "reason": s.reason} for s in items]


def _json(body: dict[str, object]) -> Response:
    """A response body as `msgspec` writes it: the shape of the route's response model (its
    schema documents it) without validating what the code just built, at a fraction of
    the cost on the hottest path."""
    return Response(_ENCODER.encode(body), media_type="application/json")


_ENCODER = msgspec.json.Encoder()


async def item_filters(
    category: Category = None, in_stock: InStock = None, exclude: Exclude = ""
) -> Filters:
    """The filter query parameters both ranking endpoints take (async: no thread hop)."""
    ids = frozenset(i.strip() for i in exclude.split(",") if i.strip())
    return Filters(category=category, in_stock=in_stock, exclude=ids, exclude_seen=False)


ItemFilters = Annotated[Filters, Depends(item_filters)]


@router.get("/users/{user_id}/recommendations", response_model=RecommendationsOut)
async def recommendations(
    request: Request,
    user_id: str,
    filters: ItemFilters,
    k: K = 10,
    exclude_seen: bool = True,
    repeats: Annotated[
        bool | None, Query(description="recommend the user's own items again (default: setting)")
    ] = None,
    now_ms: Annotated[
        int | None,
        Query(
            ge=0,
            le=4_102_444_800_000,
            description="rank as of this time, epoch ms (default: now); for replays and backtests",
        ),
    ] = None,
) -> Response:
    """Top-k for a user: their own items first when repeats are on, then personalised, else
    similar to recent items, else popular."""
    allowed = request.app.state.repeats if repeats is None else repeats
    filters = replace(filters, exclude_seen=exclude_seen, repeats=allowed)
    pseudonyms: Pseudonyms | None = request.app.state.pseudonyms
    stored_as = user_id if pseudonyms is None else pseudonyms.user(user_id)
    answer = await _ready(request).retriever.recommend(stored_as, k, filters, now_ms)
    return _json(
        {
            "user_id": user_id,
            "items": _items(answer.items),
            "source": answer.source,
            "model_version": answer.model_version,
            "as_of_event_id": answer.as_of_event_id,
        }
    )


@router.get("/model")
async def model(request: Request) -> ModelOut:
    """The model version this replica serves, since when, and how long publishing it took."""
    serving = serving_of(request)
    served = serving.follower.served
    return ModelOut(
        model_version=None if served is None else served.version,
        served_since_ms=None if served is None else served.applied_ms,
        publish_latency_ms=None if served is None else served.publish_latency_ms,
        events_learned=None if served is None else served.events_learned,
        index_items=serving.index.size,
        namespace=serving.namespace,
    )


@router.get("/stats")
async def stats(request: Request) -> StatsOut:
    """What the service has done so far: ingest's counts and the model version served here
    (a dashboard polls this: the rate of `events_applied` is the ingest rate)."""
    serving = serving_of(request)
    ingest = await serving.interactions.stats()
    served = serving.follower.served
    return StatsOut(
        events_applied=ingest.applied,
        events_duplicate=ingest.duplicates,
        events_dead_lettered=ingest.dead_lettered,
        model_version=None if served is None else served.version,
        events_learned=None if served is None else served.events_learned,
        index_items=serving.index.size,
    )


@router.get("/items/{item_id}/similar", response_model=SimilarOut)
async def similar(
    request: Request,
    item_id: str,
    filters: ItemFilters,
    k: K = 10,
) -> Response:
    """Items nearest to `item_id`; 404 when the item has no vector."""
    try:
        items = await _ready(request).retriever.similar_items(item_id, k, filters)
    except UnknownItemError:
        raise HTTPException(404, f"unknown item {item_id!r}") from None
    return _json({"item_id": item_id, "items": _items(items)})
