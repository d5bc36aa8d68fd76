"""docker-compose.yml and the Dockerfile: what a reviewer found wrong stays fixed, and
`docker-compose config` accepts the file (Debian's docker-compose; .ci/run installs it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CLUSTER = ROOT / "docker-compose.cluster.yml"  # over COMPOSE: a Redis Cluster, 2 workers, 2 APIs


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="needs Debian's docker-compose (apt-get install docker-compose; .ci/run installs it)",
)
@pytest.mark.parametrize("files", [[COMPOSE], [COMPOSE, CLUSTER]], ids=["one-redis", "cluster"])
def test_compose_config_passes_and_the_api_requires_keys_from_the_environment(
    files: list[Path],
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RECSTREAM_API_KEYS"}
    command = ["docker-compose", *(f"-f{f}" for f in files), "config", "-q"]
    without = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert "set RECSTREAM_API_KEYS" in without.stdout + without.stderr
    keyed = {**env, "RECSTREAM_API_KEYS": '{"name": "x", "sha256": "0", "scopes": ["read"]}'}
    done = subprocess.run(command, env=keyed, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_the_kafka_volume_holds_the_brokers_log() -> None:
    kafka = _compose()["services"]["kafka"]
    log_dir = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert any(v.split(":")[1] == log_dir for v in kafka["volumes"])


def test_every_recstream_service_checks_its_health_by_asking_it() -> None:
    services = _compose()["services"]
    for name in ("worker", "trainer", "api"):
        test = " ".join(services[name]["healthcheck"]["test"])
        assert "urlopen('http://127.0.0.1:" in test, name


def test_the_image_installs_the_cpu_build_of_the_pinned_torch() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pinned = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(d for d in pinned if d.startswith("torch=="))
    assert re.search(r"ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cpu\n", dockerfile)
    assert f'--index-url "$TORCH_INDEX" {torch} ' in dockerfile


def test_the_cluster_override_runs_every_process_on_a_three_primary_cluster() -> None:
    services: dict[str, Any] = yaml.safe_load(CLUSTER.read_text())["services"]
    nodes = [name for name in services if re.fullmatch(r"redis-\d", name)]
    assert len(nodes) == 3
    for name in nodes:
        assert "--cluster-enabled" in services[name]["command"]
    assert "--cluster create" in services["redis-cluster"]["command"][0]
    recstream = ("worker", "trainer", "api", "api-2")
    for name in recstream:
        assert services[name]["environment"]["RECSTREAM_REDIS_URL"] == "redis://redis-1:6379/0"
        assert services[name]["depends_on"]["redis-cluster"] == {
            "condition": "service_completed_successfully"
        }
    assert services["worker"]["scale"] == 2
