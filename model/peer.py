"""A peer trained the other way: our two-tower model retrained from scratch, for several epochs,
on every event before each block of the stream, then served frozen (with live histories) until
the next block. Evaluated beside the online recommender, it shows whether learning each event
once, as it arrives, falls behind batch retraining on the same data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from model.recommender import RecommendRequest, SystemKind, TwoTowerOnlineRecommender
from model.trainer import OnlineTrainer, TrainerConfig, TrainingExample
from model.two_tower import TwoTowerConfig, TwoTowerRecommender


class RetrainedPeer:
    """Retrains when the events learned pass each of `boundaries` (event counts)."""

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
        self.boundaries = sorted(boundaries)
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

    def recommend_many(self, requests: Sequence[RecommendRequest], k: int) -> list[list[str]]:
        if self._served is None:
            return [[] for _ in requests]
        return self._served.recommend_many(requests, k)

    def learn_many(self, batch: Sequence[TrainingExample]) -> None:
        """Keep the events; retrain from scratch once a block boundary is passed."""
        before = len(self.examples)
        self.examples.extend(batch)
        if any(before < b <= len(self.examples) for b in self.boundaries):
            self._retrain()

    def _retrain(self) -> None:
        seed = self.trainer_config.seed
        model = TwoTowerRecommender(self.model_config, seed=seed)
        trainer = OnlineTrainer(model, self.trainer_config, self.device)
        for epoch in range(self.epochs):
            if self.progress is not None:
                self.progress(f"retraining on {len(self.examples):,} events, epoch {epoch + 1}")
            for start in range(0, len(self.examples), self.batch_size):
                trainer.learn_many(self.examples[start : start + self.batch_size])
        self._served = TwoTowerOnlineRecommender(trainer)
        self.retrained_at.append(len(self.examples))
