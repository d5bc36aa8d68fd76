"""An online ranker over candidate lists: a small MLP scored per candidate, trained with a
softmax over each list (the item that happened is the positive, the other candidates of that
request the negatives), one Adagrad step per list. Deterministic under its seed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from model.errors import ModelError

Matrix = npt.NDArray[np.float64]


class RankerConfigError(ModelError, ValueError):
    """An impossible ranker setting."""


class OnlineRanker:
    """score(x) = w · x + v · relu(W x + b): linear in the features plus a few learned
    interactions between them.

    >>> ranker = OnlineRanker(features=2, seed=0)
    >>> for _ in range(300):
    ...     _ = ranker.learn([[1.0, 0.0], [0.0, 1.0]], positive=0)
    >>> bool(ranker.scores([[1.0, 0.0], [0.0, 1.0]])[0] > 0)
    True
    """

    def __init__(
        self, features: int, hidden: int = 16, learning_rate: float = 0.05, seed: int = 0
    ) -> None:
        if features < 1 or hidden < 0 or learning_rate <= 0:
            raise RankerConfigError("features >= 1, hidden >= 0 and learning_rate > 0")
        rng = np.random.default_rng(seed)
        self.features, self.hidden, self.learning_rate = features, hidden, learning_rate
        self.params: dict[str, Matrix] = {
            "w": np.zeros(features),
            "W": rng.normal(0.0, 1.0 / np.sqrt(features), (hidden, features)),
            "b": np.zeros(hidden),
            "v": np.zeros(hidden),
        }
        self._squares = {k: np.full_like(p, 1e-6) for k, p in self.params.items()}
        self.steps = 0

    def scores(self, x: npt.ArrayLike) -> Matrix:
        """A score per row of `x` [n, features]."""
        matrix = np.asarray(x, dtype=np.float64)
        p = self.params
        hidden = np.maximum(matrix @ p["W"].T + p["b"], 0.0)
        out: Matrix = matrix @ p["w"] + hidden @ p["v"]
        return out

    def learn(self, x: npt.ArrayLike, positive: int) -> float:
        """One step on a candidate list whose row `positive` happened; returns the loss."""
        matrix = np.asarray(x, dtype=np.float64)
        p = self.params
        pre = matrix @ p["W"].T + p["b"]
        hidden = np.maximum(pre, 0.0)
        logits = matrix @ p["w"] + hidden @ p["v"]
        logits -= logits.max()
        probs = np.exp(logits)
        probs /= probs.sum()
        loss = float(-np.log(max(probs[positive], 1e-12)))
        grad = probs.copy()
        grad[positive] -= 1.0  # d loss / d logits
        d_hidden = np.outer(grad, p["v"]) * (pre > 0)
        grads = {
            "w": grad @ matrix,
            "v": grad @ hidden,
            "W": d_hidden.T @ matrix,
            "b": d_hidden.sum(axis=0),
        }
        for key, g in grads.items():
            self._squares[key] += g * g
            p[key] -= self.learning_rate * g / np.sqrt(self._squares[key])
        self.steps += 1
        return loss

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint-safe: weights, Adagrad's sums of squares, steps taken."""
        return {
            "params": {k: torch.from_numpy(v.copy()) for k, v in self.params.items()},
            "squares": {k: torch.from_numpy(v.copy()) for k, v in self._squares.items()},
            "steps": self.steps,
            "learning_rate": self.learning_rate,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        params = {k: v.numpy().astype(np.float64) for k, v in state["params"].items()}
        if params["W"].shape != self.params["W"].shape:
            raise RankerConfigError(
                f"ranker of shape {params['W'].shape}, expected {self.params['W'].shape}"
            )
        self.params = params
        self._squares = {k: v.numpy().astype(np.float64) for k, v in state["squares"].items()}
        self.steps, self.learning_rate = int(state["steps"]), float(state["learning_rate"])
