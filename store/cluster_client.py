"""The asyncio Redis Cluster client recstream uses: redis-py's, set up before its first call."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis


class ClusterClient(aioredis.RedisCluster):
    """redis-py's asyncio cluster client, which loads the cluster's layout at its first call;
    several first calls at once fail there (redis-py 8.1: AttributeError on a half-made
    connection), so every call waits for that load to be done."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()  # under the client's lock: the load happens once
        return await super().execute_command(*args, **kwargs)
