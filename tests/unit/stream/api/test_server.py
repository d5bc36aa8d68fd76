"""The API supervisor's settings for the processes it spawns."""

from __future__ import annotations

import pytest

from store import cluster_client
from stream.api.server import settings_for_processes
from stream.config import Settings


@pytest.mark.parametrize(("cluster", "handed"), [(True, "yes"), (False, "no")])
def test_the_processes_get_the_supervisors_answer_to_whether_redis_is_a_cluster(
    monkeypatch: pytest.MonkeyPatch, cluster: bool, handed: str
) -> None:
    """Asked once, by the supervisor: a process it spawns (or restarts) does not ask again."""
    url = "redis://answered.invalid:6379/0"
    monkeypatch.setitem(cluster_client._CLUSTER_URLS, url, cluster)
    settings = Settings(redis_url=url, redis_cluster="auto")
    assert settings_for_processes(settings).redis_cluster == handed


def test_a_redis_that_does_not_answer_leaves_the_question_to_each_process() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", redis_cluster="auto")
    assert settings_for_processes(settings).redis_cluster == "auto"


def test_a_set_answer_is_handed_down_unchanged() -> None:
    for said in ("yes", "no"):
        settings = Settings(redis_url="redis://127.0.0.1:1/0", redis_cluster=said)
        assert settings_for_processes(settings) is settings
