"""`recstream namespace drop NAME`: an old namespace's Redis keys, record and model directory
go; the serving namespace, the rollback target and the base one are refused."""

from __future__ import annotations

import pytest
import redis

from stream.config import Settings
from stream.events.topics import ensure_topics
from stream.ops.namespaces import NamespaceDropError, drop_namespace
from stream.ops.promote import switch

pytestmark = pytest.mark.integration


def test_dropping_an_old_namespace_removes_its_keys_record_and_models_only(
    settings: Settings,
) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        for name in ("old", "live"):
            shadow = settings.in_namespace(name)
            client.set(f"{shadow.keys_prefix}model:version", 3)
            client.hset(f"{settings.redis_prefix}namespaces", name, '{"complete_ms": 1}')
            shadow.checkpoint_dir.mkdir(parents=True)
            (shadow.checkpoint_dir / "model-00000003.pt").write_bytes(b"x")
        client.set(f"{settings.keys_prefix}model:version", 9)  # the base namespace
        dropped = drop_namespace(settings, "old")
        assert dropped.keys == 1
        assert not settings.in_namespace("old").checkpoint_dir.exists()
        assert client.hget(f"{settings.redis_prefix}namespaces", "old") is None
        assert client.get(f"{settings.in_namespace('live').keys_prefix}model:version") == b"3"
        assert client.get(f"{settings.keys_prefix}model:version") == b"9"
        ensure_topics(settings)  # promote catches the namespace up from the log
        switch(settings, "live", progress=False)  # serves "live"; the base is the rollback target
        with pytest.raises(NamespaceDropError, match="serving"):
            drop_namespace(settings, "live")
        with pytest.raises(NamespaceDropError, match="base"):
            drop_namespace(settings, "")
        assert settings.in_namespace("live").checkpoint_dir.exists()
    finally:
        client.close()
