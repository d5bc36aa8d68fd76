"""Incremental training from the stream: sampled softmax with logQ correction and replay."""

from __future__ import annotations

import contextlib
import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from model.interaction import INTERACTION_KINDS, Interaction, InteractionKind, kind_code
from model.replay_buffer import ReplayBuffer
from model.two_tower import HistoryBatch, TwoTowerConfig, TwoTowerRecommender, newest_ms
from model.vocabulary import UNKNOWN_ROW, Admission, IdVocabulary


@dataclass(frozen=True, slots=True)
class TrainerConfig:
    """Optimisation knobs; randomness comes only from `seed`."""

    learning_rate: float = 1e-3
    embedding_learning_rate: float = 0.1
    temperature: float = 0.2
    sampled_negatives: int = 256
    step_examples: int = 32
    replay_capacity: int = 50_000
    replay_ratio: float = 1.0
    all_positions: bool = True
    logq_correction: bool = True
    mask_owned_negatives: bool = True
    clip_norm: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainerConfig:
        """A saved config; keys of settings that no longer exist (`threads`) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """One event to learn: the user's `history` before it and the `target` interaction."""

    history: tuple[Interaction, ...]
    target: Interaction


@dataclass(frozen=True, slots=True)
class _PackedExample:
    """A `TrainingExample` as the replay buffer keeps it, in about a third of the memory:
    one record per example instead of one per history entry. Its fields are bytes and tuples
    of strings and numbers, which the garbage collector stops tracking, so every full
    collection traverses one object per example, not three."""

    items: tuple[str, ...]
    kinds: bytes
    times: bytes  # int64 epoch ms
    quantities: tuple[int, ...] | None  # None: all 1
    target: tuple[str, str, InteractionKind, int, int]  # an Interaction's fields

    @classmethod
    def pack(cls, example: TrainingExample, keep: int | None = None) -> _PackedExample:
        """With `keep`, only the newest `keep` history entries: all a model with that
        `max_history` reads (a user's history can be ten times longer)."""
        history = example.history if keep is None else example.history[-keep:]
        quantities = tuple(i.quantity for i in history)
        target = example.target
        return cls(
            tuple(i.item_id for i in history),
            bytes(kind_code(i.kind) for i in history),
            array("q", (i.ts_ms for i in history)).tobytes(),
            None if all(q == 1 for q in quantities) else quantities,
            (target.user_id, target.item_id, target.kind, target.ts_ms, target.quantity),
        )

    def unpack(self) -> TrainingExample:
        target = Interaction(*self.target)
        quantities = self.quantities or (1,) * len(self.items)
        history = tuple(
            Interaction(target.user_id, item, INTERACTION_KINDS[kind], ts, quantity)
            for item, kind, ts, quantity in zip(
                self.items, self.kinds, array("q", self.times), quantities, strict=True
            )
        )
        return TrainingExample(history, target)


@dataclass(frozen=True, slots=True)
class StepReport:
    """What one `learn_many` step did."""

    loss: float
    examples: int
    replayed: int
    admitted: int


@dataclass(frozen=True, slots=True)
class OwnedRows:
    """Rows each example's user touched (history + target), and the example of each query."""

    rows: Tensor
    owners: Tensor

    def covers(self, candidates: Tensor) -> Tensor:
        """[queries, candidates] True where the query's user touched the candidate."""
        touched = (self.rows.unsqueeze(2) == candidates.view(1, 1, -1)).any(dim=1)
        return touched[self.owners]


class OnlineTrainer:
    """Fine-tunes a `TwoTowerRecommender` one micro-batch at a time, on one chosen device.

    Embedding tables get row-sparse SparseAdam updates (only touched rows move); dense
    weights get Adam with gradient clipping. A reservoir of past examples is mixed into
    every step so that old tastes are not forgotten.
    """

    def __init__(
        self, model: TwoTowerRecommender, config: TrainerConfig, device: torch.device
    ) -> None:
        self.config = config
        self.device = device
        self.model = model.to(device)
        self.model.train()
        self.steps = 0
        self._expired_at_ms: int | None = None
        self.examples_seen = 0
        self._generator = torch.Generator().manual_seed(config.seed)
        self._replay = ReplayBuffer[_PackedExample](config.replay_capacity, seed=config.seed)
        self._counts = torch.zeros(self.model.vocabulary.capacity, device=device)
        self._dense = torch.optim.Adam(self._dense_parameters(), lr=config.learning_rate)
        self._sparse = torch.optim.SparseAdam(
            [model.item_embedding.weight, model.feature_embedding.weight],
            lr=config.embedding_learning_rate,
        )

    def _dense_parameters(self) -> list[nn.Parameter]:
        sparse = {id(self.model.item_embedding.weight), id(self.model.feature_embedding.weight)}
        return [p for p in self.model.parameters() if id(p) not in sparse]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: model, vocabulary, optimisers, popularity, configs.

        Plain containers and tensors only, so it loads with `torch.load(weights_only=True)`.
        """
        model = self.model
        return {
            "model_config": model.config.to_dict(),
            "trainer_config": self.config.to_dict(),
            "model": model.state_dict(),
            "item_vocabulary": model.vocabulary.state_dict(),
            "item_features": model.item_features_state(),
            "dense_optimizer": self._dense.state_dict(),
            "sparse_optimizer": self._sparse.state_dict(),
            "counts": self._counts,
            "sampler": self._generator.get_state(),
            "init_rng": model.generator.get_state(),
            "steps": self.steps,
            "examples_seen": self.examples_seen,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], device: torch.device) -> OnlineTrainer:
        """Rebuild a trainer saved with `state_dict` on `device`; its replay buffer starts empty."""
        trainer = cls(
            model_from_state(state), TrainerConfig.from_dict(state["trainer_config"]), device
        )
        trainer._dense.load_state_dict(state["dense_optimizer"])
        trainer._sparse.load_state_dict(state["sparse_optimizer"])
        trainer._counts = state["counts"].to(device)
        trainer._generator.set_state(state["sampler"])
        if "init_rng" in state:  # checkpoints before the model drew from its own generator
            trainer.model.generator.set_state(state["init_rng"])
        trainer.steps = int(state["steps"])
        trainer.examples_seen = int(state["examples_seen"])
        return trainer

    def learn_one(self, example: TrainingExample) -> StepReport:
        return self.learn_many([example])

    def learn_many(self, batch: Sequence[TrainingExample]) -> StepReport:
        """Admit new items, then one optimiser step per `step_examples` (plus replayed ones)."""
        admitted = replayed = 0
        losses: list[float] = []
        size = self.config.step_examples
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            admission = self._admit(chunk)
            replay = [
                packed.unpack()
                for packed in self._replay.sample(int(len(chunk) * self.config.replay_ratio))
            ]
            keep = self.model.config.max_history
            self._replay.extend(_PackedExample.pack(e, keep) for e in chunk)
            losses.append(self._step([*chunk, *replay], final_candidates=len(chunk)))
            rows = torch.from_numpy(admission.rows).to(self.device)
            self._counts.index_add_(0, rows, torch.ones(len(rows), device=self.device))
            admitted += len(admission.fresh_rows)
            self.steps += 1
            self.examples_seen += len(chunk)
            replayed += len(replay)
        loss = sum(losses) / len(losses) if losses else 0.0
        return StepReport(loss, len(batch), replayed, admitted)

    def _admit(self, batch: Sequence[TrainingExample]) -> Admission:
        """Expire stale ids now and then, admit the batch's targets, fit the table to them."""
        vocab = self.model.vocabulary
        now = max(e.target.ts_ms for e in batch)
        ttl = vocab.expire_after_ms
        if ttl is not None and (
            self._expired_at_ms is None or now - self._expired_at_ms >= ttl // 10
        ):
            vocab.expire(now)
            self._expired_at_ms = now
        admission = vocab.observe(
            [e.target.item_id for e in batch], [e.target.ts_ms for e in batch]
        )
        if admission.capacity > self.model.item_embedding.weight.shape[0]:
            self._grow(admission.capacity)
        if admission.fresh_rows:
            self._reset(admission.fresh_rows)
        return admission

    def _grow(self, capacity: int) -> None:
        """Resize the item table and carry its optimiser state over, zero-padded."""
        old = self.model.item_embedding.weight
        state = self._sparse.state.pop(old, {})
        self.model.resize(capacity)
        new = self.model.item_embedding.weight
        self._sparse.param_groups[0]["params"][0] = new
        if state:
            self._sparse.state[new] = {
                key: _pad_rows(value, capacity) if _is_row_state(value, old) else value
                for key, value in state.items()
            }
        self._counts = _pad_rows(self._counts, capacity)

    def _reset(self, rows: list[int]) -> None:
        """New or recycled rows start fresh: weights, Adam moments and popularity."""
        self.model.reset_rows(rows)
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        weight = self.model.item_embedding.weight
        for value in self._sparse.state.get(weight, {}).values():
            if _is_row_state(value, weight):
                value[index] = 0
        self._counts[index] = 0

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _step(self, examples: list[TrainingExample], final_candidates: int) -> float:
        model = self.model
        history = model.encode_histories(
            [e.history for e in examples],
            [newest_ms(e.history, e.target.ts_ms) for e in examples],
        )
        targets = torch.from_numpy(model.vocabulary.lookup(e.target.item_id for e in examples)).to(
            self.device
        )
        with self._autocast():
            states = model.sequence_states(history)
            queries, positives, owners = self._queries(states, history, targets)
            if len(positives) == 0:
                return 0.0
            loss = self._sampled_softmax(
                queries,
                positives,
                targets[:final_candidates],
                self._owned(history, targets, owners),
            )
        self._dense.zero_grad(set_to_none=True)
        self._sparse.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(self._dense_parameters(), self.config.clip_norm)
        self._dense.step()
        self._sparse.step()  # type: ignore[no-untyped-call]
        return float(loss.detach())

    def _queries(
        self, states: Tensor, history: HistoryBatch, targets: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """User states, the row each should predict (target or next item), and its example."""
        if self.config.all_positions:
            next_rows = torch.cat([history.rows[:, 1:], targets.unsqueeze(1)], dim=1)
            valid = torch.cat(
                [history.mask[:, :-1] & history.mask[:, 1:], torch.ones_like(targets[:, None])],
                dim=1,
            ).bool()
        else:
            next_rows = targets.unsqueeze(1)
            states = states[:, -1:]
            valid = torch.ones_like(next_rows, dtype=torch.bool)
        valid &= next_rows != UNKNOWN_ROW
        owners = torch.arange(len(valid), device=valid.device).unsqueeze(1).expand_as(valid)
        return states[valid], next_rows[valid], owners[valid]

    def _owned(self, history: HistoryBatch, targets: Tensor, owners: Tensor) -> OwnedRows:
        """Which rows each query's user touched: never treat those as negatives."""
        return OwnedRows(torch.cat([history.rows, targets.unsqueeze(1)], dim=1), owners)

    def _sampled_softmax(
        self, queries: Tensor, positives: Tensor, in_batch: Tensor, owned: OwnedRows
    ) -> Tensor:
        """Softmax over positive + in-batch + uniform negatives, each corrected by log q."""
        model = self.model
        in_batch = torch.unique(in_batch[in_batch != UNKNOWN_ROW])
        rows_in_use = max(2, model.vocabulary.rows_used)
        sampled = torch.randint(
            1, rows_in_use, (self.config.sampled_negatives,), generator=self._generator
        ).to(self.device)
        candidates = torch.cat([in_batch, sampled])
        popularity = (self._counts + 1.0) / (self._counts.sum() + len(self._counts))
        if not self.config.logq_correction:
            popularity = torch.full_like(popularity, 1.0 / len(in_batch))
            rows_in_use = len(sampled)
        log_q = torch.cat(
            [
                torch.log(len(in_batch) * popularity[in_batch]),
                torch.full(
                    (len(sampled),), math.log(len(sampled) / rows_in_use), device=self.device
                ),
            ]
        )
        users = functional.normalize(queries.float(), dim=-1)
        positive_vectors = model.item_vectors(positives)
        candidate_vectors = model.item_vectors(candidates)
        tau = self.config.temperature
        positive_logits = (users * positive_vectors).sum(-1, keepdim=True) / tau
        positive_logits = positive_logits - torch.log(
            len(in_batch) * popularity[positives]
        ).unsqueeze(1)
        negative_logits = users @ candidate_vectors.T / tau - log_q
        hidden = candidates.unsqueeze(0) == positives.unsqueeze(1)
        if self.config.mask_owned_negatives:
            hidden |= owned.covers(candidates)
        negative_logits = negative_logits.masked_fill(hidden, -math.inf)
        logits = torch.cat([positive_logits, negative_logits], dim=1)
        labels = torch.zeros(len(logits), dtype=torch.long, device=self.device)
        return functional.cross_entropy(logits, labels)


def model_from_state(
    state: Mapping[str, Any], *, take: bool = False, like: TwoTowerRecommender | None = None
) -> TwoTowerRecommender:
    """The model inside a trainer `state_dict` (on the CPU, in training mode). It is built
    with an empty item table that then takes the saved one's shape: drawing random rows for
    the whole catalogue only to overwrite them was a third of a serving process's load.
    `take`: the model's parameters are the state's own tensors, not copies (for a state read
    from disk that nothing else holds: copying the item table was 0.25 s of a 1M-item load).
    `like`: a model loaded before, whose vocabulary this one's may extend (see
    `IdVocabulary.from_state_dict`)."""
    model = TwoTowerRecommender(TwoTowerConfig.from_dict(state["model_config"]), draw_tables=False)
    model.vocabulary = IdVocabulary.from_state_dict(
        state["item_vocabulary"], like=None if like is None else like.vocabulary
    )
    saved = state["model"]["item_embedding.weight"]
    model.item_embedding.weight = nn.Parameter(torch.empty_like(saved))
    model.load_state_dict(state["model"], assign=take)
    model.load_item_features_state(state["item_features"])
    return model


def _is_row_state(value: object, param: Tensor) -> bool:
    return isinstance(value, Tensor) and value.dim() > 0 and value.shape == param.shape


def _pad_rows(value: Tensor, rows: int) -> Tensor:
    pad = torch.zeros((rows - value.shape[0], *value.shape[1:]), dtype=value.dtype)
    return torch.cat([value, pad.to(value.device)])
