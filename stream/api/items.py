"""`PUT /v1/items/{item_id}` (metadata) and `DELETE /v1/items/{item_id}`."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from store.vector_state import ItemMeta
from stream.api.replica import serving_of

router = APIRouter(prefix="/v1", tags=["items"])


class ItemMetaIn(BaseModel):
    """What filters use (category, in_stock, tags) and what the ranker reads (category and
    brand: its cold-start source and affinity features); unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")

    category: str | None = Field(None, max_length=200)
    brand: str | None = Field(None, max_length=200)
    price: float | None = Field(None, ge=0, allow_inf_nan=False)
    in_stock: bool = True
    tags: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=100)


class ItemMetaOut(ItemMetaIn):
    item_id: str


@router.put("/items/{item_id}")
async def put_item(request: Request, item_id: str, body: ItemMetaIn) -> ItemMetaOut:
    """Set an item's metadata; this replica applies it at once, others via the feed. A new
    item with a category is a cold-start candidate for users of that category at once."""
    serving = serving_of(request)
    meta = ItemMeta(body.category, body.in_stock, tuple(body.tags), body.brand, body.price)
    await serving.state.put_item_meta(item_id, meta)
    serving.follower.catalog[item_id] = meta
    return ItemMetaOut(item_id=item_id, **body.model_dump())


@router.delete("/items/{item_id}", status_code=204)
async def delete_item(request: Request, item_id: str) -> Response:
    """Remove an item from results at once (here) and from every replica (via the feed)."""
    serving = serving_of(request)
    known = serving.index.contains(item_id) or item_id in serving.follower.catalog
    had_vector = await serving.state.delete_items([item_id])
    await asyncio.to_thread(serving.index.remove, [item_id])
    serving.follower.catalog.delete(item_id)
    if not known and not had_vector:
        raise HTTPException(404, f"unknown item {item_id!r}")
    return Response(status_code=204)
