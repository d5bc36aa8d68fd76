"""`recstream namespace drop NAME`: delete an old namespace (a rebuild that was promoted away
from, or never promoted): its Redis keys, its build record and its model directory. The
serving namespace, the rollback target and the base namespace are refused."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass

from stream.config import Settings
from stream.errors import StreamError
from stream.wiring import delete_namespace_keys, namespace_registry, redis_client


class NamespaceDropError(StreamError):
    """The namespace may not be dropped; the message says why."""


@dataclass(frozen=True, slots=True)
class Dropped:
    """What `drop_namespace` deleted."""

    name: str
    keys: int
    model_dir: str | None


def drop_namespace(settings: Settings, name: str) -> Dropped:
    """Delete namespace `name`, unless it serves, is what rollback returns to, or is the base."""
    if name == "":
        raise NamespaceDropError("the base namespace cannot be dropped")
    shadow = settings.in_namespace(name)  # checks the name
    asyncio.run(_refuse_if_in_use(settings, name))
    keys = delete_namespace_keys(shadow)
    asyncio.run(_forget(settings, name))
    directory = shadow.checkpoint_dir
    removed = None
    if directory.exists():
        shutil.rmtree(directory)
        removed = str(directory)
    return Dropped(name, keys, removed)


async def _refuse_if_in_use(settings: Settings, name: str) -> None:
    client = redis_client(settings)
    try:
        registry = namespace_registry(settings, client)
        if await registry.serving() == name:
            raise NamespaceDropError(f"namespace {name!r} is serving: promote another first")
        if await registry.previous() == name:
            raise NamespaceDropError(
                f"namespace {name!r} is what `recstream rollback` returns to: promote again first"
            )
    finally:
        await client.aclose()


async def _forget(settings: Settings, name: str) -> None:
    client = redis_client(settings)
    try:
        await namespace_registry(settings, client).forget(name)
    finally:
        await client.aclose()
