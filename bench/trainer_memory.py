"""Trainer memory over a long stream, in process (no broker, no Redis): prints RSS as it learns.

    python bench/trainer_memory.py [--events 700000] [--dedup-window 200000] [--every 50000]

Learns synthetic events in the live trainer's steps (`train_step_events`) and writes a
checkpoint every 1,000 events, as publishing does. Memory should rise while the bounded
structures fill (the dedup window, the replay buffer, per-user histories) and then stay flat;
each line also shows RSS after `malloc_trim` and the count of live Python allocations, which
tell growth of live objects from pages the allocator keeps;
`--tracemalloc N` prints the Python allocation sites that grew most after event N.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import tracemalloc

import torch
from tqdm import tqdm

from model.checkpoints import CheckpointStore
from stream.config import Settings
from stream.events.handlers import Outcome, SourcePosition, effect_of
from stream.events.samples import sample_events
from stream.local.processes import resident_mb
from stream.startup import trim_heap
from stream.training.loop import fresh_learner


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=700_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--dedup-window", type=int, default=200_000)
    parser.add_argument("--max-users", type=int, default=100_000, help="histories kept")
    parser.add_argument("--every", type=int, default=50_000, help="events between RSS prints")
    parser.add_argument("--tracemalloc", type=int, default=None, help="trace from event N on")
    args = parser.parse_args()
    settings = Settings(trainer_dedup_window=args.dedup_window, trainer_max_users=args.max_users)
    torch.set_num_threads(settings.torch_threads)  # as the trainer process sets it at start
    learner = fresh_learner(settings, 0)
    checkpoints = CheckpointStore(tempfile.mkdtemp(), keep=3)
    events = sample_events(args.events, users=args.users, items=args.items, seed=7)
    batch: list[tuple[SourcePosition, Outcome]] = []
    before = None
    for n, event in enumerate(tqdm(events, total=args.events, unit="ev", mininterval=5)):
        batch.append((SourcePosition("t", 0, n), effect_of(event)))
        if len(batch) == settings.train_step_events:
            learner.learn(batch)
            batch = []
        if n % 1_000 == 999:
            checkpoints.save(learner.trainer, learner.position, learner.state())
        if n % args.every == args.every - 1:
            rss = resident_mb()
            trim_heap()  # what is left is what live objects hold, not pages the allocator keeps
            tqdm.write(
                f"{n + 1:>9,} events  RSS {rss:7.1f} MB  after malloc_trim "
                f"{resident_mb():7.1f} MB  Python blocks {sys.getallocatedblocks():>10,}"
            )
        if n == args.tracemalloc:
            tracemalloc.start(10)
            before = tracemalloc.take_snapshot()
    if before is not None:
        for stat in tracemalloc.take_snapshot().compare_to(before, "lineno")[:15]:
            print(stat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
