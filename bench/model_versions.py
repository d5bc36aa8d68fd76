"""Model versions at a large catalogue: what publishing one (the trainer) and loading one
(a serving process) cost, beside the floor of mapping its file (`torch.load(mmap=True)`)
measured in the same run.

    python -m bench.model_versions [--items 1000000] [--versions 9] [--events 350]

Admits `--items` item ids into a fresh trainer, then publishes `--versions` versions with the
trainer's `ModelPublisher` (its item vectors, the comparison with the last version's, the
saved file and the changed vectors written to Redis: RECSTREAM_REDIS_URL, under a prefix of
its own, deleted at the end), the tower learning `--events` clicks before each (items
Zipf-like, as `bench.trainer_catalogue`; about a second of the trainer's learning at 1M
items). A serving process's `ServingModels` loads each, as API processes and ingest workers
load every version published (a version a second by default), beside the one before it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import torch

from bench.trainer_catalogue import admit_items, zipf_clicks
from model.checkpoints import CheckpointStore
from model.evaluation import training_examples
from model.interaction import Interaction
from model.serving_models import ServingModels
from store.redis_keys import delete_prefixed
from stream.config import Settings
from stream.training.loop import fresh_learner
from stream.training.publisher import ModelPublisher
from stream.wiring import blocking_redis_client, redis_client, vector_state

T = TypeVar("T")


def _timed(run: Callable[[], T]) -> tuple[T, float]:
    """What `run` returns and the milliseconds it took."""
    began = time.perf_counter()
    result = run()
    return result, (time.perf_counter() - began) * 1000


class _TimedStore(CheckpointStore):
    """A checkpoint store that notes how long each save took (ms)."""

    def __init__(self, directory: str, keep: int, state_every_s: float) -> None:
        super().__init__(directory, keep=keep, state_every_s=state_every_s)
        self.saves: list[float] = []

    def save(self, *args: Any, **kwargs: Any) -> int:
        version, took = _timed(partial(super().save, *args, **kwargs))
        self.saves.append(took)
        return version


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
    settings = settings.model_copy(update={"redis_prefix": f"bench:{uuid.uuid4().hex[:8]}:"})
    client = redis_client(settings)
    with tempfile.TemporaryDirectory() as directory:
        store = _TimedStore(directory, args.versions + 1, settings.checkpoint_state_s)
        publisher = ModelPublisher(vector_state(settings, client), store)
        run = asyncio.Runner()
        serving = ServingModels(store, keep=2)
        serving.get(run.run(publisher.publish(learner, 0, 0.0)).version)
        figures: dict[str, list[float]] = {
            "publish": [],
            "save": store.saves,
            "map": [],
            "load": [],
            "mb": [],
        }
        store.saves.clear()
        for n in range(args.versions):
            learned = examples[n * args.events : (n + 1) * args.events]
            for start in range(0, len(learned), step):
                learner.trainer.learn_many(learned[start : start + step])
            published = run.run(publisher.publish(learner, n + 1, 0.0))
            figures["publish"].append(published.seconds * 1000)
            version = published.version
            path = store._model_path(version)
            figures["mb"].append(path.stat().st_size / 1e6)
            mapped = partial(torch.load, path, weights_only=True, mmap=True)
            figures["map"].append(_timed(mapped)[1])
            figures["load"].append(_timed(partial(serving.get, version))[1])
        bases = len(list(store.directory.glob("items-*.pt")))
        run.run(client.aclose())
        run.close()
    blocking = blocking_redis_client(settings)
    delete_prefixed(blocking, settings.redis_prefix)
    blocking.close()
    median = {name: statistics.median(values) for name, values in figures.items()}
    floor = median["map"]
    print(
        f"\nmodel versions at {args.items:,} items ({args.versions} versions, "
        f"{args.events} events learned before each), medians"
    )
    print(f"  publish (the trainer):       {median['publish']:8.1f} ms")
    print(f"    of which the file's save:  {median['save']:8.1f} ms")
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
