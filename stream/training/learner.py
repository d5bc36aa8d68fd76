"""The trainer's view of the stream: events in partition order become training examples,
duplicates are skipped, and the offsets learned so far are kept (they go into checkpoints)."""

from __future__ import annotations

import hashlib
import logging
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from model.history_table import HistoryTable
from model.interaction import EventEffect, Interaction, kind_of
from model.ranked import RankedRecommender, TowerViews, tower_views
from model.ranking import HISTORY_LEN, CandidateConfig, Ranking
from model.recommender import TwoTowerOnlineRecommender
from model.trainer import OnlineTrainer, StepReport, TrainingExample
from stream.events.handlers import DeadLetter, Outcome, SourcePosition

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LearnedBatch:
    """What one `learn` call did."""

    events: int
    duplicates: int
    invalid: int
    report: StepReport | None
    skipped: int = 0  # events whose learning raised: skipped, so one never stops the trainer


class StreamLearner:
    """Turns decoded messages into `TrainingExample`s and learns them, exactly once each.

    Each user's recent history is kept here, from the stream itself, so an example's history
    is exactly the events before it in its partition, whatever Redis holds at that moment.
    At most `max_users` histories are kept (a `HistoryTable`); the least recently active
    user's goes first, so memory stays bounded however many users the stream brings. Everything
    needed to resume is in `state()`, saved with the trainer in a checkpoint.

    Examples are learned as `recstream eval` learns them (`RankedRecommender.learn_many`): the
    ranker first (it never sees the event it scores), then the tower, then the candidate
    sources; `ranking` is published with each version for the API replicas to rank with.
    """

    def __init__(
        self,
        trainer: OnlineTrainer,
        dedup_window: int,
        max_users: int = 100_000,
        candidates: CandidateConfig | None = None,
        tower_side: TowerViews = tower_views,
    ) -> None:
        """`tower_side`: how the ranker's training finds the tower's side of each event (exact by
        default; `stream.training.tower_index` for an indexed one)."""
        if dedup_window < 1 or max_users < 1:
            raise ValueError("dedup_window and max_users must be >= 1")
        self.trainer = trainer
        self._tower = TwoTowerOnlineRecommender(trainer)
        self._recommender = RankedRecommender(self._tower, candidates, tower_side=tower_side)
        self.dedup_window = dedup_window
        self.position: dict[str, int] = {}
        self.events_learned = 0
        self.duplicates = 0
        self.invalid = 0
        self.skipped = 0
        self._histories = HistoryTable(max_users, HISTORY_LEN)
        self._recent: OrderedDict[int, None] = OrderedDict()

    @property
    def recommender(self) -> RankedRecommender:
        """The recommender as learned so far (what `recstream eval` would score)."""
        return self._recommender

    @property
    def ranking(self) -> Ranking:
        """The candidate sources and ranker, as learned so far."""
        return self._recommender.ranking

    @property
    def users(self) -> list[str]:
        """Every user whose history this learner holds."""
        return self._histories.users

    def learn(self, batch: Sequence[tuple[SourcePosition, Outcome]]) -> LearnedBatch:
        """Learn the new events of `batch` (in its order) and move the position past all of it."""
        groups: list[tuple[str, list[TrainingExample]]] = []  # each new event's examples
        events = duplicates = invalid = 0
        before = dict(self.position)
        for source, _ in batch:
            key = source.partition_key
            self.position[key] = max(self.position.get(key, 0), source.offset + 1)
        for source, outcome in batch:
            if source.offset < before.get(source.partition_key, 0):
                continue  # delivered again after a seek: already learned
            if isinstance(outcome, DeadLetter):
                invalid += 1
            elif _id_hash(outcome.event_id) in self._recent:
                duplicates += 1
            else:
                self._remember(_id_hash(outcome.event_id))
                groups.append((outcome.event_id, self._examples(outcome)))
                events += 1
        skipped = self._learn_each_event_once(groups) if groups else 0
        report = self._tower.last_report if groups else None
        events -= skipped
        self.events_learned += events
        self.duplicates += duplicates
        self.invalid += invalid
        self.skipped += skipped
        return LearnedBatch(events, duplicates, invalid, report, skipped)

    def _learn_each_event_once(self, groups: Sequence[tuple[str, list[TrainingExample]]]) -> int:
        """Learn every event's examples in one call. Should that raise (a bug that some event
        trips), learn each event alone and skip those that raise: one event must never stop
        the trainer (it would crash-loop on it after every restart). Returns how many were
        skipped. Events the failed call had reached may be learned twice: a small cost to the
        model, never to the counts."""
        try:
            self._recommender.learn_many([e for _, examples in groups for e in examples])
            return 0
        except Exception:
            log.exception("learning a batch of %d events failed; learning each alone", len(groups))
        skipped = 0
        for event_id, examples in groups:
            try:
                self._recommender.learn_many(examples)
            except Exception as error:
                skipped += 1
                log.error("skipped event %s: learning it raised %r", event_id, error)
        return skipped

    def _remember(self, event_hash: int) -> None:
        self._recent[event_hash] = None
        while len(self._recent) > self.dedup_window:
            self._recent.popitem(last=False)

    def _examples(self, effect: EventEffect) -> list[TrainingExample]:
        targets = [_compact(i) for i in effect.interactions]
        past = self._histories.extend(sys.intern(effect.user_id), targets)
        return [TrainingExample(past, target) for target in targets]

    def state(self) -> dict[str, Any]:
        """Plain containers and tensors (checkpoint-safe): histories, recent event ids (as
        64-bit hashes in one tensor: a checkpoint is written every publish), counters."""
        return {
            "history_table": self._histories.state_dict(),
            "recent_ids": torch.tensor(list(self._recent), dtype=torch.int64),
            "events_learned": self.events_learned,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "skipped": self.skipped,
        }

    def restore(
        self,
        state: Mapping[str, Any],
        position: Mapping[str, int],
        ranking: Mapping[str, Any] | None = None,
    ) -> None:
        """Continue from a checkpoint's `state()`, stream position and ranking state."""
        if ranking is not None:
            self._recommender.ranking = Ranking.from_state_dict(ranking)
        self.position = dict(position)
        self.events_learned = int(state.get("events_learned", 0))
        self.duplicates = int(state.get("duplicates", 0))
        self.invalid = int(state.get("invalid", 0))
        self.skipped = int(state.get("skipped", 0))
        recent = state.get("recent_ids")
        self._recent = OrderedDict.fromkeys([] if recent is None else recent.tolist())
        if "history_table" in state:
            self._histories.load_state_dict(state["history_table"])
            return
        self._histories.clear()
        for user, rows in state.get("histories", {}).items():  # checkpoints before the table
            self._histories.extend(
                user, [Interaction(user, str(i), kind_of(k), int(t), int(q)) for i, k, t, q in rows]
            )


def _id_hash(event_id: str) -> int:
    """A 64-bit hash of an event id (collisions: ~1e-10 within a 200,000-id window)."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _compact(interaction: Interaction) -> Interaction:
    """The interaction with its ids interned: a history entry then costs its record alone, as
    the same user and item ids recur across events (and across the replay buffer)."""
    return Interaction(
        sys.intern(interaction.user_id),
        sys.intern(interaction.item_id),
        interaction.kind,
        interaction.ts_ms,
        interaction.quantity,
    )
