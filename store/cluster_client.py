"""The Redis Cluster clients recstream uses: redis-py's, with two races and two leaks mended."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

_CLUSTER_URLS: dict[str, bool] = {}  # what each Redis URL answered: is it a cluster node


def is_cluster_node(url: str, timeout_s: float = 2.0) -> bool:
    """Whether the Redis at `url` runs in cluster mode (`INFO cluster`), asked once per
    process and URL. Light on purpose: the CLI asks it at start, before it imports torch.
    Raises `redis.RedisError` or `OSError` when the node does not answer (asked again next
    time)."""
    known = _CLUSTER_URLS.get(url)
    if known is None:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        try:
            known = _CLUSTER_URLS[url] = bool(client.info("cluster").get("cluster_enabled"))
        finally:
            client.close()
    return known


class ClusterClient(aioredis.RedisCluster):
    """redis-py's asyncio cluster client (8.1), which loads the cluster's layout at its first
    call and again after a node failed; calls made meanwhile can meet a connection being set
    up or torn down under them and fail with AttributeError. So every call waits for a
    pending load, and that failure is raised as the connection error it is (callers retry
    those: see `stream.wiring.retrying`). Its `aclose` closes every connection even while
    a load is pending."""

    async def aclose(self) -> None:
        """redis-py's closes nothing once a failed call (a timeout, a connection error) has
        marked the layout for loading again: the connections then stayed open until the
        garbage collector found them, each with a ResourceWarning."""
        await super().aclose()
        await self.nodes_manager.aclose()
        await self.nodes_manager.aclose("startup_nodes")

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()  # under the client's lock: the load happens once
        try:
            return await super().execute_command(*args, **kwargs)
        except AttributeError as error:  # e.g. "'NoneType' object has no attribute 'writelines'"
            raise RedisConnectionError(f"cluster connection reset mid-call: {error}") from error


class BlockingClusterClient(redis.RedisCluster):
    """redis-py's blocking cluster client (8.1), whose `close` leaves the connections it made
    to the startup nodes (while loading the layout, and for SCANs) open until collected;
    closed here too."""

    def close(self) -> None:
        super().close()
        for node in self.nodes_manager.startup_nodes.values():
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()
