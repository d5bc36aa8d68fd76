"""`recstream data` and `recstream eval` end to end on small files (no broker needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.cli import main

SYSTEMS = {
    "recommender": "recommender",
    "tower_only": "ablation",
    "no_tower": "ablation",
    "popularity": "baseline",
    "recent_popularity": "baseline",
    "item_knn": "baseline",
    "incremental_mf": "baseline",
    "personal_frequency": "baseline",
    "retrained_model": "peer",
}
METRICS = {"kind", "hr", "ndcg", "mrr", "coverage", "events_per_s", "segments"}
SEGMENTS = {"new_users", "cold_items", "repeat_items", "first_time_items"}


def test_eval_on_a_synthetic_log_writes_every_system_to_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, out = tmp_path / "log.csv", tmp_path / "result.json"
    assert (
        main(
            [
                "data",
                "synthetic",
                "--users",
                "40",
                "--items",
                "120",
                "--events",
                "800",
                "--out",
                str(log),
            ]
        )
        == 0
    )
    items = tmp_path / "log.items.csv"
    assert items.read_text().splitlines()[0] == "item_id,category,brand"
    argv = ["eval", "--events", str(log), "--k", "5", "--json", str(out), "--peer-epochs", "1"]
    argv += ["--items", str(items)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["k"] == 5
    assert 0 < result["events_scored"] < result["events_total"]
    assert {name: r["kind"] for name, r in result["results"].items()} == SYSTEMS
    for scores in result["results"].values():
        assert set(scores) >= METRICS
        assert 0 <= scores["hr"] <= 1
        assert set(scores["segments"]) == SEGMENTS
        assert [b["block"] for b in scores["blocks"]] == [f"block_{n}" for n in range(2, 6)]
        split = scores["segments"]
        assert (
            split["repeat_items"]["scored"] + split["first_time_items"]["scored"]
            == (result["events_scored"])
        )
    table = capsys.readouterr().out
    assert "HR@5" in table
    assert all(name in table for name in SYSTEMS)
    assert "HR@5 by segment" in table
    assert "HR@5 by fifth" in table


def test_eval_rejects_a_bad_file_with_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "bad.csv"
    log.write_text("user_id,item_id,timestamp\nu,i,1\nu,i,never\n")
    assert main(["eval", "--events", str(log)]) == 2
    assert "line 3" in capsys.readouterr().err
