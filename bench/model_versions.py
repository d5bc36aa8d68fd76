"""Model versions at a large catalogue: what saving one and loading one cost, beside the
floor of reading its file (`torch.load`) measured in the same run.

    python -m bench.model_versions [--items 1000000] [--versions 5] [--admitted 100]

Admits `--items` item ids into a fresh trainer, then saves `--versions` versions with
`--admitted` new ids admitted before each (a trainer's usual next version: the same ids plus
a few appended). A serving process's `ServingModels` loads each, as API replicas and ingest
workers load every version published (a version a second by default), beside the one
before it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import torch

from bench.trainer_catalogue import _admit
from model.checkpoints import CheckpointStore
from model.interaction import Interaction
from model.serving_models import ServingModels
from model.trainer import TrainingExample
from stream.config import Settings
from stream.training.loop import fresh_learner

T = TypeVar("T")


def _timed(run: Callable[[], T]) -> tuple[T, float]:
    """What `run` returns and the milliseconds it took."""
    began = time.perf_counter()
    result = run()
    return result, (time.perf_counter() - began) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--admitted", type=int, default=100)
    args = parser.parse_args()
    settings = Settings()
    torch.set_num_threads(settings.torch_threads)  # as every serving process sets it
    learner = fresh_learner(settings, seed=0)
    _admit(learner, args.items)
    with tempfile.TemporaryDirectory() as directory:
        store = CheckpointStore(directory, keep=args.versions + 1)
        serving = ServingModels(store, keep=2)
        serving.get(store.save(learner.trainer, {}, full=False))
        figures: dict[str, list[float]] = {"save": [], "read": [], "load": []}
        for n in range(args.versions):
            admitted = [
                TrainingExample((), Interaction("u", f"new-{n}-{k}", "click", 0))
                for k in range(args.admitted)
            ]
            learner.trainer._admit(admitted)
            version, took = _timed(partial(store.save, learner.trainer, {}, full=False))
            figures["save"].append(took)
            path = store._model_path(version)
            figures["read"].append(_timed(partial(torch.load, path, weights_only=True))[1])
            figures["load"].append(_timed(partial(serving.get, version))[1])
    median = {name: statistics.median(values) for name, values in figures.items()}
    floor = median["read"]
    print(
        f"\nmodel versions at {args.items:,} items ({args.versions} versions, "
        f"{args.admitted} ids admitted before each), median ms"
    )
    print(f"  save (the trainer):          {median['save']:8.1f}")
    print(f"  read its file (floor):       {floor:8.1f}")
    print(f"  load (a serving process):    {median['load']:8.1f} = {median['load'] / floor:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
