"""`recstream data` and `recstream eval` end to end on small files (no broker needed)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from model.interaction_log import read_interactions
from stream.cli import main
from stream.evaluation.datasets import ML100K_MEMBER, fetch_ml100k

SYSTEMS = {"model", "popularity", "recent_popularity", "item_knn", "incremental_mf"}
METRICS = {"hr", "ndcg", "mrr", "coverage", "events_per_s"}


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
    assert main(["eval", "--events", str(log), "--k", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["k"] == 5
    assert 0 < result["events_scored"] < result["events_total"]
    assert set(result["results"]) == SYSTEMS
    for scores in result["results"].values():
        assert set(scores) >= METRICS
        assert 0 <= scores["hr"] <= 1
    table = capsys.readouterr().out
    assert "HR@5" in table
    assert all(name in table for name in SYSTEMS)


def test_eval_rejects_a_bad_file_with_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "bad.csv"
    log.write_text("user_id,item_id,timestamp\nu,i,1\nu,i,never\n")
    assert main(["eval", "--events", str(log)]) == 2
    assert "line 3" in capsys.readouterr().err


def test_ml100k_is_converted_from_the_cached_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / "recbole-1.2.1-py3-none-any.whl", "w") as wheel:
        wheel.writestr(
            ML100K_MEMBER,
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
            "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
        )
    path = fetch_ml100k()
    assert path.parent == tmp_path / "cache"
    rows = list(read_interactions(path))
    assert [(r.user_id, r.item_id, r.ts_ms) for r in rows] == [
        ("196", "242", 881_250_949_000),
        ("186", "302", 891_717_742_000),
    ]
