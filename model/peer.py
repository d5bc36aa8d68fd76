"""A peer trained the other way: our two-tower model retrained from scratch, for several epochs,
on every event before each block of the stream, then served frozen (with live histories) until
the next block. Evaluated beside the online recommender, it shows whether learning each event
once, as it arrives, falls behind batch retraining on the same data."""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from multiprocessing.process import BaseProcess

import torch

from model.recommender import RecommendRequest, SystemKind, TwoTowerOnlineRecommender
from model.trainer import OnlineTrainer, TrainerConfig, TrainingExample
from model.two_tower import TwoTowerConfig, TwoTowerRecommender


class PeerError(RuntimeError):
    """The peer's background training process failed."""


class RetrainedPeer:
    """Retrains on the first `b` events when the events learned pass each of `boundaries`.

    `start(examples)`, given the whole stream up front (as evaluation has it), trains every
    boundary's model in a child process while the other systems run; each is taken when the
    stream reaches its boundary, so the peer still never sees an event before it is scored.
    Without `start`, it retrains inline. Both give the same models (same seeds, same events).
    """

    name = "retrained_model"
    kind: SystemKind = "peer"

    def __init__(
        self,
        boundaries: Sequence[int],
        device: torch.device,
        model_config: TwoTowerConfig | None = None,
        trainer_config: TrainerConfig | None = None,
        *,
        epochs: int = 3,
        batch_size: int = 256,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if epochs < 1 or batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        self.boundaries = sorted(set(boundaries))
        self.device = device
        self.model_config = model_config or TwoTowerConfig()
        # several epochs already revisit every event: no replay on top of them
        base = trainer_config or TrainerConfig()
        self.trainer_config = replace(base, replay_ratio=0.0)
        self.epochs, self.batch_size = epochs, batch_size
        self.progress = progress
        self.examples: list[TrainingExample] = []
        self.retrained_at: list[int] = []
        self._served: TwoTowerOnlineRecommender | None = None
        self._child: BaseProcess | None = None
        self._results: multiprocessing.Queue[tuple[int, bytes]] | None = None

    def start(self, examples: Iterable[TrainingExample]) -> None:
        """Train every boundary's model in a child process, from `examples` (the whole stream
        in order, as `learn_many` will see it)."""
        context = multiprocessing.get_context("spawn")  # no fork of a process holding torch
        self._results = context.Queue()
        self._child = context.Process(
            target=_train_each,
            args=(self._settings(), self.boundaries, list(examples), self._results),
            kwargs={"verbose": self.progress is not None},
            name="retrained_model",
            daemon=True,
        )
        self._child.start()

    def recommend_many(self, requests: Sequence[RecommendRequest], k: int) -> list[list[str]]:
        if self._served is None:
            return [[] for _ in requests]
        return self._served.recommend_many(requests, k)

    def learn_many(self, batch: Sequence[TrainingExample]) -> None:
        """Keep the events; once a block boundary is passed, serve a model retrained from
        scratch on the events before it."""
        before = len(self.examples)
        self.examples.extend(batch)
        passed = [b for b in self.boundaries if before < b <= len(self.examples)]
        if passed:
            self._served = TwoTowerOnlineRecommender(self._trained(passed[-1]))
            self.retrained_at.append(passed[-1])

    def _settings(self) -> tuple[TwoTowerConfig, TrainerConfig, torch.device, int, int]:
        return self.model_config, self.trainer_config, self.device, self.epochs, self.batch_size

    def _trained(self, boundary: int) -> OnlineTrainer:
        if self._child is None:
            say = self.progress or (lambda _: None)
            return _train(self._settings(), self.examples[:boundary], say)
        assert self._results is not None
        while True:
            try:
                at, trained = self._results.get(timeout=1.0)
            except queue.Empty:
                if not self._child.is_alive():
                    raise PeerError(
                        f"retrained_model: its training process exited ({self._child.exitcode})"
                    ) from None
                continue
            if at == boundary:
                if boundary == self.boundaries[-1]:
                    self._child.join()
                trainer: OnlineTrainer = pickle.loads(trained)  # our own child's output
                return trainer


def _train(
    settings: tuple[TwoTowerConfig, TrainerConfig, torch.device, int, int],
    examples: Sequence[TrainingExample],
    say: Callable[[str], None],
) -> OnlineTrainer:
    """Our model from scratch, `epochs` passes over `examples` in order."""
    model_config, trainer_config, device, epochs, batch_size = settings
    model = TwoTowerRecommender(model_config, seed=trainer_config.seed)
    trainer = OnlineTrainer(model, trainer_config, device)
    for epoch in range(epochs):
        say(f"retrained_model: retraining on {len(examples):,} events, epoch {epoch + 1}")
        for start in range(0, len(examples), batch_size):
            trainer.learn_many(examples[start : start + batch_size])
    return trainer


def _train_each(
    settings: tuple[TwoTowerConfig, TrainerConfig, torch.device, int, int],
    boundaries: Sequence[int],
    examples: Sequence[TrainingExample],
    results: multiprocessing.Queue[tuple[int, bytes]],
    *,
    verbose: bool,
) -> None:
    """The child process: each boundary's model, in order, pickled onto `results`."""
    torch.set_num_threads(1)  # one core for this, the rest for the systems being scored
    say: Callable[[str], None] = (
        (lambda line: print(line, file=sys.stderr)) if verbose else (lambda _: None)
    )
    for boundary in boundaries:
        if boundary <= len(examples):
            results.put((boundary, pickle.dumps(_train(settings, examples[:boundary], say))))
