"""`ClusterClient`: redis-py's asyncio cluster client, closed whatever state a failed call
left it in (a real 3-primary Redis Cluster)."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store.cluster_client import ClusterClient
from stream.local.stack import RedisClusterNodes

pytestmark = pytest.mark.integration


def test_a_client_whose_call_timed_out_closes_every_connection(
    redis_cluster: RedisClusterNodes,
) -> None:
    """A call that fails with a timeout or a connection error marks the layout for loading
    again at the next call; redis-py's `aclose` then closed nothing, and the client's
    connections stayed open until the garbage collector found them (in CI: dozens of
    ResourceWarnings raised at some later test's teardown)."""

    async def scenario() -> list[bool]:
        client = ClusterClient.from_url(redis_cluster.url, socket_timeout=0.1)
        await client.set("cluster-client-test", "1")  # connections to the nodes it needs
        with pytest.raises((RedisTimeoutError, RedisConnectionError)):
            await client.blpop(["cluster-client-test:nothing"], timeout=2)  # outlasts 0.1 s
        await client.aclose()
        managers = client.nodes_manager
        nodes = [*managers.nodes_cache.values(), *managers.startup_nodes.values()]
        return [c.is_connected for node in nodes for c in node._connections]

    connected = asyncio.run(scenario())
    assert connected  # the client did connect
    assert not any(connected)
