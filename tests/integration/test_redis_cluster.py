"""Pointed at a Redis Cluster, which it cannot use yet, recstream refuses at start with the
reason instead of failing later, one cross-slot error at a time."""

from __future__ import annotations

import pytest

from stream.cli import USES_REDIS, main
from stream.local.stack import RedisClusterNodes

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("command", [["worker"], ["trainer"], ["api"], ["rollback"]])
def test_commands_that_use_redis_refuse_a_cluster_with_the_reason(
    command: list[str],
    redis_cluster: RedisClusterNodes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert command[0] in USES_REDIS
    monkeypatch.setenv("RECSTREAM_REDIS_URL", redis_cluster.url)
    assert main(command) == 2
    error = capsys.readouterr().err
    assert "is a Redis Cluster node" in error
    assert "different slots" in error
