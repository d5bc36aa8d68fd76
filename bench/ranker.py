"""The ranker's cost per request and the co-visitation source's memory, against floors measured
in the same run.

    python bench/ranker.py [--candidates 200] [--k 10] [--items 100000] [--events 300000]

Per request: building the candidates' features and ranking them with `OnlineRanker`, beside
the floor of taking the top-k of scores already computed (a request without ranking). Memory:
the co-visitation rows after a stream over `--items` items, per 100k items, against the cap.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import tracemalloc

import numpy as np
import torch

from model.interaction import Interaction
from model.ranked import RankedRecommender
from model.ranker import OnlineRanker
from model.ranking import FEATURES, CandidateConfig
from model.recommender import RecommendRequest
from model.sources import CoVisitation
from model.trainer import TrainingExample


def _median_ms(call: object, runs: int) -> float:
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        call()  # type: ignore[operator]
        timings.append((time.perf_counter() - began) * 1000)
    return statistics.median(timings)


def ranking_cost(candidates: int, k: int, runs: int = 2000) -> None:
    """The ranker alone over `candidates` feature rows, and the top-k floor."""
    rng = np.random.default_rng(0)
    ranker = OnlineRanker(len(FEATURES), seed=0)
    for _ in range(200):
        ranker.learn(rng.random((candidates, len(FEATURES))), positive=0)
    features = rng.random((candidates, len(FEATURES)))
    scores = rng.random(candidates)
    floor = _median_ms(lambda: np.argsort(-scores, kind="stable")[:k], runs)
    ranked = _median_ms(lambda: np.argsort(-ranker.scores(features), kind="stable")[:k], runs)
    print(f"ranking {candidates} candidates, k={k} (median of {runs}, one core):")
    print(f"  top-k of given scores (floor):   {floor:.3f} ms")
    print(f"  ranker scores + top-k:           {ranked:.3f} ms  (+{ranked - floor:.3f} ms)")


def request_cost(items: int, k: int, runs: int = 300) -> None:
    """Candidates + features + ranking for one request without the tower, on a warm state."""
    system = RankedRecommender(None, CandidateConfig())
    rng = random.Random(1)
    history: dict[str, list[Interaction]] = {}
    batch = []
    for n in range(60_000):
        user = f"u{rng.randrange(2_000)}"
        item = f"i{int(rng.paretovariate(1.2)) % items}"
        event = Interaction(user, item, "click", n * 1_000)
        past = history.setdefault(user, [])
        batch.append(TrainingExample(tuple(past[-20:]), event))
        past.append(event)
        if len(batch) == 1_000:
            system.learn_many(batch)
            batch = []
    users = sorted(history)
    requests = [
        RecommendRequest(u, tuple(history[u][-20:]), 10**12) for u in users[:runs] if history[u]
    ]
    began = time.perf_counter()
    for request in requests:
        system.recommend_many([request], k)
    per = (time.perf_counter() - began) * 1000 / len(requests)
    print(f"one request without the tower (candidates + features + ranking): {per:.3f} ms")


def covisitation_memory(items: int, events: int, cap: int) -> None:
    """Bytes of the co-visitation rows after `events` events over `items` items."""
    rng = random.Random(2)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    source = CoVisitation(cap=cap)
    history: dict[str, list[Interaction]] = {}
    for n in range(events):
        user = f"u{rng.randrange(20_000)}"
        item = f"i{rng.randrange(items)}"
        event = Interaction(user, item, "click", n * 1_000)
        past = history.setdefault(user, [])
        source.learn(past[-10:], event)
        past.append(event)
        del past[:-10]
    history.clear()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    entries = source.entries()
    print(
        f"co-visitation after {events:,} events over {items:,} items (cap {cap} per item):\n"
        f"  {entries:,} neighbour entries ({entries / max(len(source.catalogue), 1):.1f} per item, "
        f"bound {2 * cap}), {used / 2**20:.1f} MiB = {used / 2**20 / items * 100_000:.1f} MiB "
        f"per 100k items ({used / max(entries, 1):.0f} B per entry)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--cap", type=int, default=CoVisitation().cap)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ranking_cost(args.candidates, args.k)
    request_cost(args.items, args.k)
    covisitation_memory(args.items, args.events, args.cap)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
