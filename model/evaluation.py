"""Prequential (test-then-train) evaluation in time order, the way an online system lives."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from model.baselines import (
    IncrementalMFRecommender,
    ItemKNNRecommender,
    PersonalFrequencyRecommender,
    PopularityRecommender,
)
from model.interaction import Interaction
from model.ranked import RankedRecommender
from model.ranking import HISTORY_LEN
from model.recommender import OnlineRecommender, RecommendRequest, TwoTowerOnlineRecommender
from model.trainer import OnlineTrainer, TrainerConfig, TrainingExample
from model.two_tower import ITEM_FEATURE_FIELDS, TwoTowerConfig, TwoTowerRecommender

RECENT_HALF_LIFE_MS = 3 * 86_400_000


NEW_USER_EVENTS = 5  # a user's first events make the "new_users" segment
COLD_ITEM_MS = 86_400_000  # an item's first day in the stream makes the "cold_items" segment
SEGMENTS = ("new_users", "cold_items", "repeat_items", "first_time_items")
BLOCKS = 5  # the stream's fifths, each reported on its own ("block_1" ... "block_5")


@dataclass
class SystemScore:
    """Running totals for one system: hits and ranks over scored events, per segment too,
    and time spent."""

    name: str
    kind: str = "recommender"
    hits: int = 0
    ndcg: float = 0.0
    reciprocal_rank: float = 0.0
    recommended: set[str] = field(default_factory=set)
    recommend_s: float = 0.0
    learn_s: float = 0.0
    segment_hits: dict[str, int] = field(default_factory=dict)

    def score(self, ranked: Sequence[str], target: str, segments: Sequence[str] = ()) -> None:
        self.recommended.update(ranked)
        if target in ranked:
            rank = ranked.index(target) + 1
            self.hits += 1
            self.ndcg += 1.0 / math.log2(rank + 1)
            self.reciprocal_rank += 1.0 / rank
            for segment in segments:
                self.segment_hits[segment] = self.segment_hits.get(segment, 0) + 1

    def summary(
        self, scored: int, events: int, catalogue: int, segments: dict[str, int] | None = None
    ) -> dict[str, Any]:
        per = max(scored, 1)
        return {
            "kind": self.kind,
            "hr": self.hits / per,
            "ndcg": self.ndcg / per,
            "mrr": self.reciprocal_rank / per,
            "coverage": len(self.recommended) / max(catalogue, 1),
            "events_per_s": events / max(self.recommend_s + self.learn_s, 1e-9),
            "train_events_per_s": events / max(self.learn_s, 1e-9),
            "segments": {
                name: {"scored": n, "hr": self.segment_hits.get(name, 0) / max(n, 1)}
                for name, n in (segments or {}).items()
                if not name.startswith("block_")
            },
            "blocks": [
                {"block": name, "scored": n, "hr": self.segment_hits.get(name, 0) / max(n, 1)}
                for name, n in sorted((segments or {}).items())
                if name.startswith("block_") and n
            ],
        }


@dataclass(frozen=True)
class EvaluationResult:
    """The numbers of one run, one entry per system, as `recstream eval --json` writes them."""

    k: int
    events_scored: int
    events_total: int
    results: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "events_scored": self.events_scored,
            "events_total": self.events_total,
            "results": self.results,
        }

    def table(self) -> str:
        """A fixed-width table: one row per system, metrics at K."""
        k = self.k
        head = (
            f"{'system':<18}{f'HR@{k}':>9}{f'NDCG@{k}':>10}{f'MRR@{k}':>9}"
            f"{'coverage':>10}{'events/s':>11}"
        )
        lines = [head, "-" * len(head)]
        for name, r in self.results.items():
            lines.append(
                f"{name:<18}{r['hr']:>9.4f}{r['ndcg']:>10.4f}{r['mrr']:>9.4f}"
                f"{r['coverage']:>10.3f}{r['events_per_s']:>11,.0f}"
            )
        lines.append(f"{self.events_scored:,} of {self.events_total:,} events scored")
        counts = next(iter(self.results.values()), {}).get("segments", {})
        if counts:
            head = f"{f'HR@{k} by segment':<18}" + "".join(f"{s:>18}" for s in counts)
            lines += ["", head, "-" * len(head)]
            for name, r in self.results.items():
                cells = "".join(f"{r['segments'][s]['hr']:>18.4f}" for s in counts)
                lines.append(f"{name:<18}{cells}")
            scored = "".join(f"{n['scored']:>18,}" for n in counts.values())
            lines.append(f"{'events scored':<18}{scored}")
        blocks = next(iter(self.results.values()), {}).get("blocks", [])
        if blocks:
            head = f"{f'HR@{k} by fifth':<18}" + "".join(f"{b['block']:>11}" for b in blocks)
            lines += ["", head, "-" * len(head)]
            for name, r in self.results.items():
                lines.append(f"{name:<18}" + "".join(f"{b['hr']:>11.4f}" for b in r["blocks"]))
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class EvaluationConfig:
    """Protocol knobs: K, warm-up share (learned, not scored), repeats, micro-batch size."""

    k: int = 10
    warmup: float = 0.2
    allow_repeats: bool = False
    batch_size: int = 256
    history_len: int = HISTORY_LEN

    def __post_init__(self) -> None:
        if self.k < 1 or self.batch_size < 1 or self.history_len < 1:
            raise ValueError("k, batch_size and history_len must be >= 1")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")


def prequential(
    events: Sequence[Interaction],
    systems: Sequence[OnlineRecommender],
    config: EvaluationConfig,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> EvaluationResult:
    """Score every system on each event before any system learns it, in time order.

    Events are sorted by time (stable on ties) and cut into micro-batches: each batch is
    recommended for first, then learned. A user's history includes the events before it,
    within the batch too, as live serving sees the click made a moment ago. Without
    `allow_repeats`, items the user already touched are never recommended and events
    that repeat one are learned but not scored.
    """
    ordered = sorted(events, key=lambda e: e.ts_ms)
    warmup_end = int(len(ordered) * config.warmup)
    scores = {s.name: SystemScore(s.name, s.kind) for s in systems}
    if len(scores) != len(systems):
        raise ValueError("system names must be unique")
    examples = training_examples(ordered, config.history_len)
    seen: dict[str, set[str]] = {}
    user_events: dict[str, int] = {}
    item_first_ms: dict[str, int] = {}
    segment_counts = dict.fromkeys(SEGMENTS, 0)
    scored = 0
    for start in range(0, len(ordered), config.batch_size):
        batch = ordered[start : start + config.batch_size]
        requests: list[RecommendRequest] = []
        targets: list[str] = []
        segments: list[tuple[str, ...]] = []
        learned: list[TrainingExample] = []
        for position, event in enumerate(batch, start):
            example = next(examples)
            touched = seen.setdefault(event.user_id, set())
            past = example.history
            repeat = event.item_id in touched
            first_ms = item_first_ms.setdefault(event.item_id, event.ts_ms)
            if position >= warmup_end and (config.allow_repeats or not repeat):
                exclude = frozenset() if config.allow_repeats else frozenset(touched)
                requests.append(RecommendRequest(event.user_id, past, event.ts_ms, exclude))
                targets.append(event.item_id)
                labels = (
                    *_segments(user_events.get(event.user_id, 0), event.ts_ms - first_ms, repeat),
                    f"block_{position * BLOCKS // len(ordered) + 1}",
                )
                segments.append(labels)
                for label in labels:
                    segment_counts[label] = segment_counts.get(label, 0) + 1
            learned.append(example)
            touched.add(event.item_id)
            user_events[event.user_id] = user_events.get(event.user_id, 0) + 1
        for system in systems:  # every system recommends before any learns the batch
            score = scores[system.name]
            if requests:
                began = time.perf_counter()
                ranked = system.recommend_many(requests, config.k)
                score.recommend_s += time.perf_counter() - began
                for recs, target, labels in zip(ranked, targets, segments, strict=True):
                    score.score(recs[: config.k], target, labels)
        for system in systems:
            score = scores[system.name]
            began = time.perf_counter()
            system.learn_many(learned)
            score.learn_s += time.perf_counter() - began
        scored += len(requests)
        if progress is not None:
            progress(len(batch), {n: s.hits / max(scored, 1) for n, s in scores.items()})
    catalogue = len({e.item_id for e in ordered})
    return EvaluationResult(
        k=config.k,
        events_scored=scored,
        events_total=len(ordered),
        results={
            n: s.summary(scored, len(ordered), catalogue, segment_counts) for n, s in scores.items()
        },
    )


def training_examples(
    ordered: Iterable[Interaction], history_len: int = HISTORY_LEN
) -> Iterator[TrainingExample]:
    """Each event of a time-ordered stream with its user's `history_len` events before it."""
    histories: dict[str, list[Interaction]] = {}
    for event in ordered:
        history = histories.setdefault(event.user_id, [])
        yield TrainingExample(tuple(history[-history_len:]), event)
        history.append(event)
        del history[:-history_len]


def _segments(user_events: int, item_age_ms: int, repeat: bool) -> tuple[str, ...]:
    """The segments one scored event counts in."""
    labels = ["repeat_items" if repeat else "first_time_items"]
    if user_events < NEW_USER_EVENTS:
        labels.append("new_users")
    if item_age_ms < COLD_ITEM_MS:
        labels.append("cold_items")
    return tuple(labels)


def tower_system(
    device: torch.device,
    model_config: TwoTowerConfig | None = None,
    trainer_config: TrainerConfig | None = None,
) -> TwoTowerOnlineRecommender:
    """The two-tower model alone, freshly initialised, seeded by `trainer_config.seed`."""
    trainer_config = trainer_config or TrainerConfig()
    model = TwoTowerRecommender(model_config or TwoTowerConfig(), seed=trainer_config.seed)
    return TwoTowerOnlineRecommender(OnlineTrainer(model, trainer_config, device))


def standard_systems(
    device: torch.device,
    model_config: TwoTowerConfig | None = None,
    trainer_config: TrainerConfig | None = None,
    items: Mapping[str, Mapping[str, str]] | None = None,
) -> list[OnlineRecommender]:
    """The recommender as served, its ablations (views of its state that learn nothing
    themselves) and every baseline, seeded by `trainer_config.seed`. With `items` (item id ->
    metadata), the tower hashes their category and brand and the recommender proposes cold
    items of the user's categories."""
    trainer_config = trainer_config or TrainerConfig()
    model_config = model_config or TwoTowerConfig()
    fields = sorted({f for meta in (items or {}).values() for f in meta} & set(ITEM_FEATURE_FIELDS))
    if fields:
        model_config = replace(model_config, feature_fields=tuple(fields))
    recommender = RankedRecommender(
        tower_system(device, model_config, trainer_config), seed=trainer_config.seed
    )
    if items:
        recommender.set_items(items)
    return [
        recommender,
        *recommender.views(),
        PopularityRecommender(),
        PopularityRecommender(half_life_ms=RECENT_HALF_LIFE_MS, name="recent_popularity"),
        ItemKNNRecommender(),
        IncrementalMFRecommender(seed=trainer_config.seed),
        PersonalFrequencyRecommender(),
    ]
