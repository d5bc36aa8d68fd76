"""`recstream produce` and `replay --from-file`: valid lines reach the topics, invalid ones are
reported by line, and replaying again changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from store.redis_keys import RedisKeys, as_text
from stream.api.app import create_api
from stream.cli import produce_file
from stream.config import Settings
from stream.events.samples import sample_events
from stream.events.topics import TopicNames
from stream.local.processes import settings_env
from stream.local.stack import free_port
from stream.ops.replay_file import Pace, replay_file
from tests.conftest import (
    Processes,
    Spawner,
    ingest_counts,
    read_topic,
    scrape_metrics,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_produce_sends_valid_lines_and_reports_rejects_with_line_numbers(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"type":"click","event_id":"f1","user_id":"u","ts":1767225600000,"item_id":"i1"}\n'
        '{"type":"click","event_id":"f2","user_id":"u","ts":"noon","item_id":"i2"}\n'
        '{"type":"order","event_id":"f3","user_id":"u","ts":1767225600000,"order_id":"o",'
        '"items":[{"item_id":"i1"}]}\n'
        "not json\n"
    )
    summary = produce_file(settings, str(path), progress=False)
    assert (summary.sent, summary.rejected, summary.failed) == (2, 2, 0)
    assert summary.reasons[0].startswith("line 2: ts")
    assert summary.reasons[1].startswith("line 4: not valid JSON")

    topics = TopicNames.from_settings(settings)
    assert [e["event_id"] for e in read_topic(settings.kafka_bootstrap, topics.clicks, 1)] == ["f1"]
    assert [e["event_id"] for e in read_topic(settings.kafka_bootstrap, topics.orders, 1)] == ["f3"]


def test_item_columns_of_an_event_file_become_item_metadata(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,type,user_id,ts,item_id,order_id,quantity,category,brand\n"
        "c1,click,u,2026-01-01T10:00:00Z,tent,,,camping,acme\n"
        "o1,order,u,2026-01-01T11:00:00Z,boot,o1,1,hiking,\n"
        "o1,order,u,2026-01-01T11:00:00Z,tent,o1,2,camping,acme\n"
        "c2,click,u,2026-01-01T12:00:00Z,map,,,,\n"
    )
    summary = replay_file(settings, str(path), progress=False)
    assert (summary.sent, summary.rejected, summary.items_described) == (3, 0, 2)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        stored = client.hgetall(RedisKeys(settings.redis_prefix).item_meta)
    finally:
        client.close()
    metas = {as_text(k): json.loads(v) for k, v in stored.items()}
    assert {i: (m["category"], m["brand"]) for i, m in metas.items()} == {
        "tent": ("camping", "acme"),
        "boot": ("hiking", None),
    }
    orders = read_topic(settings.kafka_bootstrap, TopicNames.from_settings(settings).orders, 1)
    assert [line["item_id"] for line in orders[0]["items"]] == ["boot", "tent"]


def test_replaying_a_file_twice_leaves_the_state_of_one_pass(
    settings: Settings, tmp_path: Path, start_worker: Spawner
) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text("".join(e.to_json().decode() + "\n" for e in sample_events(300, seed=4)))
    start_worker()
    trainer_settings = settings.model_copy(update={"trainer_metrics_port": free_port()})
    trainer = Processes()
    trainer.start("trainer", trainer_settings)

    def state() -> tuple[int, object, object]:
        client = redis.Redis.from_url(settings.redis_url)
        keys = RedisKeys(settings.redis_prefix)
        applied = int(client.hget(keys.stats, "applied") or 0)
        history = client.zrange(keys.history("user-000001"), 0, -1)
        clicks = client.zrange(keys.item_clicks, 0, -1, withscores=True)
        client.close()
        return applied, history, clicks

    def trainer_counts() -> tuple[float, float]:
        metrics = scrape_metrics(trainer_settings.trainer_metrics_port)
        return metrics["recstream_trainer_events_total"], metrics[
            "recstream_trainer_duplicates_total"
        ]

    try:
        first = replay_file(settings, str(path), position=tmp_path / "p1.json", progress=False)
        assert first.sent == 300
        wait_until(lambda: state()[0] == 300, 60, "one pass applied")
        wait_until(lambda: trainer_counts() == (300, 0), 60, "one pass learned")
        once = state()
        again = replay_file(settings, str(path), position=tmp_path / "p2.json", progress=False)
        assert again.sent == 300
        wait_until(
            lambda: ingest_counts(settings).get("duplicates") == 300,
            60,
            "the second pass seen as duplicates",
        )
        wait_until(lambda: trainer_counts() == (300, 300), 60, "the trainer to skip it")
        assert state() == once
    finally:
        trainer.stop_all()
    resumed = replay_file(settings, str(path), position=tmp_path / "p1.json", progress=False)
    assert (resumed.sent, resumed.skipped) == (0, 300)


def test_an_interrupted_replay_resumes_with_no_gap_and_nothing_counted_twice(
    settings: Settings, tmp_path: Path, start_worker: Spawner
) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text("".join(e.to_json().decode() + "\n" for e in sample_events(400, seed=6)))
    position = tmp_path / "position.json"
    argv = ["replay", "--from-file", str(path), "--position", str(position), "--quiet"]
    env = settings_env(settings)
    first = subprocess.Popen(
        [sys.executable, "-m", "stream", *argv, "--rate", "200", "--save-every", "20"], env=env
    )
    wait_until(position.exists, 30, "a saved position")
    first.kill()
    first.wait()
    saved = json.loads(position.read_text())["line"]
    assert 0 < saved < 400
    resumed = subprocess.run([sys.executable, "-m", "stream", *argv], env=env, check=False)
    assert resumed.returncode == 0
    assert json.loads(position.read_text())["line"] == 400
    start_worker()
    client = redis.Redis.from_url(settings.redis_url)
    stats = RedisKeys(settings.redis_prefix).stats
    wait_until(lambda: int(client.hget(stats, "applied") or 0) == 400, 60, "400 applied")
    time.sleep(1.0)
    assert int(client.hget(stats, "applied") or 0) == 400
    client.close()


def test_the_api_keeps_answering_while_a_replay_runs(
    settings: Settings, tmp_path: Path, start_worker: Spawner
) -> None:
    events = list(sample_events(3_000, users=300, seed=8))
    first, rest = tmp_path / "first.jsonl", tmp_path / "rest.jsonl"
    first.write_text("".join(e.to_json().decode() + "\n" for e in events[:500]))
    rest.write_text("".join(e.to_json().decode() + "\n" for e in events[500:]))
    start_worker()
    replay_file(settings, str(first), progress=False)
    wait_until(lambda: ingest_counts(settings).get("applied", 0) == 500, 60, "the first 500 events")

    replaying = threading.Thread(
        target=replay_file, args=(settings, str(rest)), kwargs={"pace": Pace(rate=500)}
    )
    statuses: list[int] = []
    users = sorted({e.user_id for e in events})
    with TestClient(create_api(settings)) as api:
        wait_until(lambda: api.get("/readyz").status_code == 200, 30, "the API to be ready")
        replaying.start()
        while replaying.is_alive() or ingest_counts(settings).get("applied", 0) < 3_000:
            user = users[len(statuses) % len(users)]
            statuses.append(api.get(f"/v1/users/{user}/recommendations").status_code)
            statuses.append(api.get("/v1/model").status_code)
            assert len(statuses) < 100_000
            assert ingest_counts(settings).get("applied", 0) <= 3_000
        replaying.join()
    assert len(statuses) > 100
    assert set(statuses) == {200}, sorted(set(statuses))


def test_what_recstream_data_writes_produce_sends_in_every_format_and_eval_reads(
    settings: Settings, tmp_path: Path
) -> None:
    """One event file format: `recstream data` -> `produce` (CSV through stdin, JSONL,
    Parquet) and `eval`; ids derived alike from each, so the same events twice are one."""
    env = settings_env(settings)
    data = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream",
            "data",
            "synthetic",
            "--users",
            "20",
            "--items",
            "50",
            "--events",
            "200",
            "--out",
            "-",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    lines = data.splitlines()
    assert lines[0] == "type,user_id,item_id,ts,quantity"
    piped = subprocess.run(
        [sys.executable, "-m", "stream", "produce", "-", "--quiet"],
        input=data,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    csv_path = tmp_path / "events.csv"
    csv_path.write_text(data)
    from stream.events.files import read_events

    events = [r.event for r in read_events(str(csv_path))]
    assert all(events)
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("".join(e.to_json().decode() + "\n" for e in events if e))
    pytest.importorskip("pyarrow")
    from pyarrow import csv as pa_csv
    from pyarrow import parquet

    parquet.write_table(pa_csv.read_csv(csv_path), tmp_path / "events.parquet")
    for path in (jsonl, tmp_path / "events.parquet"):
        summary = produce_file(settings, str(path), progress=False)
        assert (summary.sent, summary.rejected, summary.failed) == (len(events), 0, 0)
    topics = TopicNames.from_settings(settings)
    sent = read_topic(
        settings.kafka_bootstrap,
        topics.clicks,
        3 * sum(1 for e in events if e and e.type == "click"),
    ) + read_topic(settings.kafka_bootstrap, topics.orders, 1)
    assert {e["event_id"] for e in sent} == {e.event_id for e in events if e}
    evaluated = subprocess.run(
        [sys.executable, "-m", "stream", "eval", "--events", str(csv_path), "--limit", "150"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "recommender" in evaluated.stdout
