"""Index benchmark on trained vectors: recall@10 against exact search, build time, search
time, and what happens when the model moves the vectors (prints figures).

    python -m bench.index_recall [--items 1000000] [--events 200000] [--drift 40000]
        [--factories IDMap2,Flat IDMap2,IVF1024,Flat IDMap2,HNSW32] [--nprobe 16 32 64]
        [--ef-search 128 256 512 1024] [--skip-drift]

Vectors: see bench/trained_vectors.py (trained once, then cached). The floor of the same run
is exact search: numpy brute force, one query at a time. Per index: the build (upserts of
50k items, as a replica's follower makes them, plus any background IVF retrain), recall@10
and per-query time (one thread, one query at a time, as a replica searches). Then drift: the
model's next snapshot of every vector is upserted (an IVF index then retrains in the
background and swaps; an HNSW one is rebuilt as its replaced vectors pass 20%, which at 1M
items takes many minutes: `--skip-drift`): recall while the old centroids serve, and after.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np
import numpy.typing as npt

from bench.trained_vectors import DIM, trained_vectors
from store.faiss_index import FaissVectorIndex

_UPSERT = 50_000


def tenth_scores(items: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]) -> list[float]:
    """Each query's 10th best score: a hit is an item that scores at least as well (items
    with equal vectors, such as unseen items of the same features, tie: any of them counts)."""
    tenth = []
    for start in range(0, len(queries), 100):
        scores = queries[start : start + 100] @ items.T
        tenth += [float(np.partition(-row, 9)[9]) * -1 for row in scores]
    return tenth


def exact_search_ms(items: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]) -> float:
    """Median time of one brute-force numpy top-10 query: the floor an index is held to."""
    times = []
    for query in queries:
        began = time.perf_counter()
        np.argpartition(-(items @ query), 10)[:10]
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def measure(
    index: FaissVectorIndex, queries: npt.NDArray[np.float32], exact: list[float]
) -> tuple[float, float, float]:
    """recall@10 (see `tenth_scores`), median and p99 ms of one query."""
    hits, times = 0, []
    for query, tenth in zip(queries, exact, strict=True):
        began = time.perf_counter()
        found = index.search(query, 10)[0]
        times.append(time.perf_counter() - began)
        hits += sum(score >= tenth - 1e-5 for score in found.scores)
    times.sort()
    return hits / (10 * len(queries)), times[len(times) // 2] * 1e3, times[-len(times) // 100] * 1e3


def _upsert(index: FaissVectorIndex, items: npt.NDArray[np.float32]) -> float:
    began = time.perf_counter()
    for start in range(0, len(items), _UPSERT):
        rows = range(start, min(start + _UPSERT, len(items)))
        index.upsert([str(n) for n in rows], items[start : rows.stop])
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--drift", type=int, default=40_000)
    parser.add_argument("--factories", nargs="+", default=["IDMap2,IVF1024,Flat", "IDMap2,HNSW32"])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--skip-drift", action="store_true")
    args = parser.parse_args()
    vectors = trained_vectors(args.items, args.events, args.drift)
    items, queries = vectors.items, vectors.users
    print(f"{len(items)} trained item vectors (dim {DIM}), {len(queries)} user queries")
    exact = tenth_scores(items, queries)
    exact_moved = tenth_scores(vectors.items_moved, vectors.users_moved)
    print(f"floor: exact numpy search, one query: {exact_search_ms(items, queries[:50]):.2f} ms")
    for factory in args.factories:
        probes = args.nprobe if "IVF" in factory else [0]
        breadths = args.ef_search if "HNSW" in factory else [0]
        index = FaissVectorIndex(DIM, factory, search_threads=1, nprobe=max(probes) or 32)
        built = _upsert(index, items)
        began = time.perf_counter()
        index.wait_retrained()
        print(
            f"{factory}: built in {built:.1f} s, then "
            f"{time.perf_counter() - began:.1f} s for a background retrain to finish"
        )
        for nprobe, ef in itertools.product(probes, breadths):
            if nprobe:
                index.set_nprobe(nprobe)
            if ef:
                index.set_ef_search(ef)
            recall, p50, p99 = measure(index, queries, exact)
            label = f"nprobe {nprobe}" if nprobe else f"ef_search {ef}" if ef else "search"
            print(f"  {label}: recall@10 {recall:.3f}, p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        if args.skip_drift:
            continue
        moved = _upsert(index, vectors.items_moved)
        recall, p50, _ = measure(index, vectors.users_moved, exact_moved)
        print(
            f"  drift: every vector moved, upserted in {moved:.1f} s; old centroids: "
            f"recall@10 {recall:.3f}, p50 {p50:.3f} ms"
        )
        began = time.perf_counter()
        index.wait_retrained()
        recall, p50, _ = measure(index, vectors.users_moved, exact_moved)
        print(
            f"  after the background retrain (+{time.perf_counter() - began:.1f} s): "
            f"recall@10 {recall:.3f}, p50 {p50:.3f} ms"
        )


if __name__ == "__main__":
    main()
