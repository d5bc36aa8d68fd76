"""Item and user vectors of a two-tower model trained on a synthetic shop, cached outside the
repo: what the index benchmarks search. Random vectors have no neighbourhood structure, so
no approximate index finds their neighbours; trained ones are what a replica serves.

The model (dim 64, category and brand features) learns `events` events of a synthetic shop
of `items` items (Zipf popularity, topics of 100 items, users drifting between topics), then
`drift` more: the second snapshot is the same catalogue after the model moved on, which is
what an index trained on the first one drifts away from. Items are embedded as the model
serves them; an item it never saw gets the vector of its features. Queries are the vectors of
the users active last, from their histories.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from model.evaluation import training_examples
from model.interaction import Interaction
from model.synthetic import SyntheticConfig, synthetic_interactions, synthetic_items
from model.trainer import OnlineTrainer, TrainerConfig
from model.two_tower import TwoTowerConfig, TwoTowerRecommender, newest_ms
from stream.evaluation.datasets import cache_dir

DIM = 64
_BATCH = 512
_CHUNK = 50_000


@dataclass(frozen=True)
class TrainedVectors:
    """Unit item vectors [items, DIM] and user vectors [users, DIM] after `events` events,
    and both again after `drift` more."""

    items: npt.NDArray[np.float32]
    users: npt.NDArray[np.float32]
    items_moved: npt.NDArray[np.float32]
    users_moved: npt.NDArray[np.float32]


def trained_vectors(items: int, events: int, drift: int, users: int = 1_000) -> TrainedVectors:
    """The cached vectors, trained first when this size was never cached (minutes)."""
    path = cache_dir() / "bench" / f"trained-{items}-{events}-{drift}-{users}-{DIM}.npz"
    if not path.exists():
        _train(path, items, events, drift, users)
    with np.load(path) as saved:
        return TrainedVectors(*(saved[k] for k in ("items", "users", "items_moved", "users_moved")))


def _train(path: Path, items: int, events: int, drift: int, users: int) -> None:
    torch.set_num_threads(2)
    shop = SyntheticConfig(users=max(1_000, items // 10), items=items, seed=0)
    model = TwoTowerRecommender(TwoTowerConfig(dim=DIM, feature_fields=("category", "brand")))
    ids = []
    for item_id, features in synthetic_items(shop):
        model.set_item_features(item_id, features)
        ids.append(item_id)
    trainer = OnlineTrainer(model, TrainerConfig(), torch.device("cpu"))
    stream = synthetic_interactions(shop, events + drift)
    histories: dict[str, list[Interaction]] = {}

    def learn(n: int, what: str) -> None:
        began = time.perf_counter()
        examples = training_examples(_remembered(stream, histories, n), 20)
        with tqdm(total=n, desc=what, unit="event") as bar:
            while batch := list(itertools.islice(examples, _BATCH)):
                trainer.learn_many(batch)
                bar.update(len(batch))
        print(f"{what}: {n} events in {time.perf_counter() - began:.0f} s")

    learn(events, "train")
    first = _embedded(model, ids), _users(model, histories, users)
    learn(drift, "drift")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        items=first[0],
        users=first[1],
        items_moved=_embedded(model, ids),
        users_moved=_users(model, histories, users),
    )


def _remembered(
    stream: Iterable[Interaction], histories: dict[str, list[Interaction]], n: int
) -> Iterator[Interaction]:
    """The next `n` interactions, each kept in its user's history (the newest 20)."""
    for event in itertools.islice(stream, n):
        history = histories.setdefault(event.user_id, [])
        history.append(event)
        del history[:-20]
        yield event


def _embedded(model: TwoTowerRecommender, ids: list[str]) -> npt.NDArray[np.float32]:
    chunks = [
        model.embed_items(ids[start : start + _CHUNK]).numpy()
        for start in range(0, len(ids), _CHUNK)
    ]
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def _users(
    model: TwoTowerRecommender, histories: dict[str, list[Interaction]], n: int
) -> npt.NDArray[np.float32]:
    """The vectors of the `n` users active last, from their histories."""
    recent = sorted(histories.values(), key=lambda h: h[-1].ts_ms)[-n:]
    vectors = model.embed_users(recent, [newest_ms(h, 0) for h in recent])
    return np.ascontiguousarray(vectors.numpy(), dtype=np.float32)
