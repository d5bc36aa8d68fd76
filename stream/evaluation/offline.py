"""`recstream eval` and `recstream data`: run the prequential protocol on an interaction log."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from model.device import choose_device
from model.evaluation import (
    BLOCKS,
    EvaluationConfig,
    prequential,
    standard_systems,
    training_examples,
)
from model.interaction_log import (
    InteractionLogError,
    read_interactions,
    read_items,
    read_log,
    write_interactions,
    write_items,
)
from model.peer import RetrainedPeer
from model.synthetic import SyntheticConfig, synthetic_interactions, synthetic_items
from model.trainer import TrainerConfig
from stream.evaluation.datasets import DatasetError, fetch_instacart, fetch_ml100k

FETCHERS = {"ml-100k": fetch_ml100k, "instacart": fetch_instacart}


def run_evaluation(args: argparse.Namespace) -> int:
    """Read the log, score model and baselines test-then-train, print a table (and JSON)."""
    try:
        events, described = read_log(args.events)
    except (InteractionLogError, OSError) as error:
        print(f"recstream eval: {args.events}: {error}", file=sys.stderr)
        return 2
    events.sort(key=lambda e: e.ts_ms)
    events = events[: args.limit] if args.limit else events
    config = EvaluationConfig(
        k=args.k, warmup=args.warmup, allow_repeats=args.allow_repeats, batch_size=args.batch_size
    )
    device = choose_device(args.device)
    torch.set_num_threads(args.threads)  # this command's process: set once, here
    trainer_config = TrainerConfig(seed=args.seed)
    try:
        items = {**described, **(read_items(args.items) if args.items else {})} or None
    except (InteractionLogError, OSError) as error:
        print(f"recstream eval: {args.items}: {error}", file=sys.stderr)
        return 2
    systems = standard_systems(device, trainer_config=trainer_config, items=items)
    if args.peer_epochs:
        boundaries = [len(events) * b // BLOCKS for b in range(1, BLOCKS)]
        peer = RetrainedPeer(
            boundaries,
            device,
            trainer_config=trainer_config,
            epochs=args.peer_epochs,
            progress=lambda line: print(line, file=sys.stderr),
        )
        peer.start(training_examples(events, config.history_len))  # in a child process
        systems.append(peer)
    print(f"{len(events):,} events, device {device}", file=sys.stderr)
    with tqdm(total=len(events), desc="eval", unit="ev", file=sys.stderr) as bar:

        def progress(done: int, hit_rates: dict[str, float]) -> None:
            bar.update(done)
            bar.set_postfix({name: f"{hr:.3f}" for name, hr in hit_rates.items()}, refresh=False)

        result = prequential(events, systems, config, progress)
    print(result.table())
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return 0


def write_dataset(args: argparse.Namespace) -> int:
    """`recstream data ml-100k|instacart|synthetic`: write a CSV that `recstream eval` reads."""
    to_stdout = args.out == "-"
    if args.source in FETCHERS:
        try:
            path = FETCHERS[args.source](None if to_stdout or not args.out else Path(args.out))
        except DatasetError as error:
            print(f"recstream data: {error}", file=sys.stderr)
            return 2
        if to_stdout:
            write_interactions(read_interactions(path), sys.stdout)
        else:
            print(path)
        return 0
    config = SyntheticConfig(users=args.users, items=args.items, seed=args.seed)
    stream = tqdm(
        synthetic_interactions(config, args.events), desc="synthetic", unit="row", file=sys.stderr
    )
    if to_stdout:  # for `recstream data synthetic --out - | recstream produce -`
        write_interactions(stream, sys.stdout)
        return 0
    out = Path(args.out or f"synthetic-{args.users}u-{args.items}i-{args.events}e-s{args.seed}.csv")
    rows = write_interactions(stream, out)
    items = out.with_name(out.stem + ".items.csv")
    described = write_items(synthetic_items(config), items)
    print(f"{out} ({rows:,} rows)")
    print(f"{items} ({described:,} items: category, brand; pass it to eval with --items)")
    return 0
