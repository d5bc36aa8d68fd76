"""Model versions at a large catalogue: what saving one and loading one cost, beside the
floor of mapping its file (`torch.load(mmap=True)`) measured in the same run.

    python -m bench.model_versions [--items 1000000] [--versions 9] [--events 350]

Admits `--items` item ids into a fresh trainer, then saves `--versions` versions, the tower
learning `--events` clicks before each (items Zipf-like, as `bench.trainer_catalogue`; about
a second of the trainer's learning at 1M items). A serving process's `ServingModels` loads
each, as API processes and ingest workers load every version published (a version a second
by default), beside the one before it.
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

from bench.trainer_catalogue import admit_items, zipf_clicks
from model.checkpoints import CheckpointStore
from model.evaluation import training_examples
from model.interaction import Interaction
from model.serving_models import ServingModels
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
    parser.add_argument("--versions", type=int, default=9)
    parser.add_argument("--events", type=int, default=350)
    args = parser.parse_args()
    settings = Settings()
    torch.set_num_threads(settings.torch_threads)  # as every trainer and serving process sets it
    learner = fresh_learner(settings, seed=0)
    admit_items(learner, args.items)
    clicks = zipf_clicks(args.events * args.versions, 20_000, args.items, seed=1)
    examples = list(
        training_examples(Interaction(c.user_id, c.item_id, "click", c.ts_ms) for c in clicks)
    )
    step = settings.train_step_events
    with tempfile.TemporaryDirectory() as directory:
        store = CheckpointStore(directory, keep=args.versions + 1)
        serving = ServingModels(store, keep=2)
        serving.get(store.save(learner.trainer, {}, full=False))
        figures: dict[str, list[float]] = {"save": [], "map": [], "load": [], "mb": []}
        for n in range(args.versions):
            learned = examples[n * args.events : (n + 1) * args.events]
            for start in range(0, len(learned), step):
                learner.trainer.learn_many(learned[start : start + step])
            version, took = _timed(partial(store.save, learner.trainer, {}, full=False))
            figures["save"].append(took)
            path = store._model_path(version)
            figures["mb"].append(path.stat().st_size / 1e6)
            mapped = partial(torch.load, path, weights_only=True, mmap=True)
            figures["map"].append(_timed(mapped)[1])
            figures["load"].append(_timed(partial(serving.get, version))[1])
        bases = len(list(store.directory.glob("items-*.pt")))
    median = {name: statistics.median(values) for name, values in figures.items()}
    floor = median["map"]
    print(
        f"\nmodel versions at {args.items:,} items ({args.versions} versions, "
        f"{args.events} events learned before each), medians"
    )
    print(f"  save (the trainer):          {median['save']:8.1f} ms")
    print(
        f"  version file:                {median['mb']:8.1f} MB (item table bases on disk: {bases})"
    )
    print(f"  map its file (floor):        {floor:8.1f} ms")
    print(
        f"  load (a serving process):    {median['load']:8.1f} ms = {median['load'] / floor:.1f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
