"""Trainer rate at a large catalogue, in process (no broker, no Redis): events/s learned.

    python -m bench.trainer_catalogue [--items 1000000] [--events 3000] [--users 20000]
                                      [--factory IDMap2,IVF1024,Flat] [--nprobe 32]

Admits `--items` item ids into a fresh trainer, then learns the same click stream (items
drawn Zipf-like from the catalogue) three ways in the same run:
  - the tower's step alone (the floor: what learning costs without the ranker);
  - the whole learner with the ranker's tower candidates found exactly (every item scored for
    every event: the trainer's way when the replicas search exactly);
  - the whole learner with them found in an index of `--factory` (its way when the replicas
    serve from that index), and recall@100 of those candidates against the exact ones.
The item vectors are the trainer's own: freshly initialised, then moved by the events learned.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import torch
from tqdm import tqdm

from model.evaluation import training_examples
from model.interaction import Interaction
from model.ranked import tower_views
from model.recommender import RecommendRequest
from model.trainer import TrainingExample
from stream.config import Settings
from stream.events.handlers import Outcome, SourcePosition, effect_of
from stream.events.schema import ClickEvent
from stream.training.learner import StreamLearner
from stream.training.loop import fresh_learner
from stream.training.tower_index import IndexedTowerViews

_ORIGIN_MS = 1_700_000_000_000


def zipf_clicks(n: int, users: int, items: int, seed: int) -> list[ClickEvent]:
    """`n` clicks, users uniform, items Zipf-like (a = 1.1) over the catalogue, 100 ms apart."""
    rng = np.random.default_rng(seed)
    picks = (rng.zipf(1.1, size=n) - 1) % items
    who = rng.integers(0, users, size=n)
    return [
        ClickEvent(
            event_id=f"e{seed}-{k}",
            user_id=f"u{who[k]}",
            ts=datetime.fromtimestamp((_ORIGIN_MS + 100 * k) / 1000, UTC),
            item_id=f"i{picks[k]}",
        )
        for k in range(n)
    ]


def admit_items(learner: StreamLearner, items: int) -> None:
    """Give every catalogue id a row, as if each had been seen (in 50k-id steps)."""
    for start in tqdm(range(0, items, 50_000), desc="admitting items", unit="50k"):
        chunk = [
            TrainingExample((), Interaction("u", f"i{n}", "click", _ORIGIN_MS))
            for n in range(start, min(start + 50_000, items))
        ]
        learner.trainer._admit(chunk)


def _batches(
    clicks: list[ClickEvent], step: int, offset: int
) -> Iterator[list[tuple[SourcePosition, Outcome]]]:
    for start in range(0, len(clicks), step):
        yield [
            (SourcePosition("t", 0, offset + start + n), effect_of(c))
            for n, c in enumerate(clicks[start : start + step])
        ]


def _rate(learner: StreamLearner, clicks: list[ClickEvent], step: int, label: str) -> float:
    """Events/s learned by the whole learner (after a warm-up tenth, not timed)."""
    warm = len(clicks) // 10
    for batch in _batches(clicks[:warm], step, 0):
        learner.learn(batch)
    began = time.perf_counter()
    for batch in tqdm(list(_batches(clicks[warm:], step, warm)), desc=label, unit="step"):
        learner.learn(batch)
    return (len(clicks) - warm) / (time.perf_counter() - began)


def _tower_rate(learner: StreamLearner, clicks: list[ClickEvent], step: int) -> float:
    """Events/s of the tower's step alone on the same stream (no ranker, no candidates)."""
    examples = list(
        training_examples(Interaction(c.user_id, c.item_id, "click", c.ts_ms) for c in clicks)
    )
    warm = len(examples) // 10
    learner.trainer.learn_many(examples[:warm])
    began = time.perf_counter()
    for start in tqdm(range(warm, len(examples), step), desc="tower alone", unit="step"):
        learner.trainer.learn_many(examples[start : start + step])
    return (len(examples) - warm) / (time.perf_counter() - began)


def _recall(learner: StreamLearner, views: IndexedTowerViews, users: int, k: int) -> float:
    """Recall@k of the indexed nearest items against the exact ones, for `users` users."""
    requests = [
        RecommendRequest(user, learner._histories.get(user), _ORIGIN_MS)
        for user in learner.users[:users]
    ]
    tower = learner.recommender.tower
    exact = tower_views(tower, requests)
    indexed = views(tower, requests)
    hits = total = 0
    for a, b in zip(exact, indexed, strict=True):
        if a is not None and b is not None:
            truth = set(a.nearest(k))
            hits += len(truth & set(b.nearest(k)))
            total += len(truth)
    return hits / max(total, 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=3_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--factory", default="IDMap2,IVF1024,Flat")
    parser.add_argument("--nprobe", type=int, default=32)
    args = parser.parse_args()
    exact_settings = Settings()
    indexed_settings = Settings(index_factory=args.factory, index_nprobe=args.nprobe)
    torch.set_num_threads(exact_settings.torch_threads)  # as the trainer process sets it
    step = exact_settings.train_step_events
    clicks = zipf_clicks(args.events, args.users, args.items, seed=1)
    rates: dict[str, float] = {}
    recall = 0.0
    for label, settings in (("exact", exact_settings), ("indexed", indexed_settings)):
        learner = fresh_learner(settings, seed=0)
        admit_items(learner, args.items)
        rates[label] = _rate(learner, clicks, step, f"learner, {label} candidates")
        views = learner.recommender.tower_side
        if isinstance(views, IndexedTowerViews):
            recall = _recall(learner, views, 500, 100)
        del learner
    floor_learner = fresh_learner(exact_settings, seed=0)
    admit_items(floor_learner, args.items)
    floor = _tower_rate(floor_learner, clicks, step)
    print(
        f"\ntrainer at {args.items:,} items ({args.events:,} clicks of {args.users:,} users, "
        f"steps of {step} events, {exact_settings.torch_threads} torch thread(s))"
    )
    print(f"  tower step alone (floor):         {floor:8,.0f} events/s")
    for label, note in (
        ("exact", "every item scored per event"),
        ("indexed", f"{args.factory}, nprobe {args.nprobe}"),
    ):
        print(
            f"  learner, {label:<7} candidates:     {rates[label]:8,.0f} events/s "
            f"= {rates[label] / floor:.0%} of the floor ({note})"
        )
    print(f"  indexed candidates' recall@100 against exact: {recall:.3f} (500 users)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
