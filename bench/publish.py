"""Publishing model versions and reading them back, on one Redis and on a local 3-primary
Redis Cluster, in the same run (prints figures and the cluster's cost against one Redis).

    python -m bench.publish [--items 100000] [--changed 1000] [--versions 10] [--reads 20]

One Redis is RECSTREAM_REDIS_URL (default 127.0.0.1:6379); the cluster is started here and
stopped at the end. Per kind: a first version of every item (what a trainer publishes when
Redis lost its last version), then `--versions` versions of `--changed` changed items (a
steady trainer), then `--reads` reads of `--changed` published vectors with the version and
feed position they belong to (what a replica does for each feed entry).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import numpy as np

from bench.load import redis_of
from store.redis_keys import delete_prefixed
from store.vector_state import RedisVectorState
from stream.config import Settings
from stream.wiring import blocking_redis_client, redis_client, redis_keys

DIM = 64


async def _measure(settings: Settings, args: argparse.Namespace) -> dict[str, float]:
    """Milliseconds: the full publish, and medians of a changed-items publish and a read."""
    client = redis_client(settings)
    state = RedisVectorState(client, redis_keys(settings), DIM)
    rng = np.random.default_rng(0)
    ids = [f"item-{n}" for n in range(args.items)]
    vectors = rng.normal(size=(args.items, DIM)).astype(np.float32)
    try:
        began = time.perf_counter()
        await state.put_item_vectors(ids, vectors, 1)
        full = time.perf_counter() - began
        publishes, reads = [], []
        for version in range(2, 2 + args.versions):
            picked = rng.choice(args.items, args.changed, replace=False)
            began = time.perf_counter()
            await state.put_item_vectors([ids[i] for i in picked], vectors[picked], version)
            publishes.append(time.perf_counter() - began)
        for _ in range(args.reads):
            picked = rng.choice(args.items, args.changed, replace=False)
            began = time.perf_counter()
            await state.published([ids[i] for i in picked])
            reads.append(time.perf_counter() - began)
    finally:
        await client.aclose()
    return {
        "full": full * 1e3,
        "changed": statistics.median(publishes) * 1e3,
        "read": statistics.median(reads) * 1e3,
    }


def _run(settings: Settings, args: argparse.Namespace) -> dict[str, float]:
    settings = settings.model_copy(update={"redis_prefix": f"bench:{uuid.uuid4().hex[:8]}:"})
    try:
        return asyncio.run(_measure(settings, args))
    finally:
        client = blocking_redis_client(settings)
        delete_prefixed(client, settings.redis_prefix)
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=100_000, help="items in the catalogue")
    parser.add_argument("--changed", type=int, default=1_000, help="items changed per version")
    parser.add_argument("--versions", type=int, default=10, help="versions of changed items")
    parser.add_argument("--reads", type=int, default=20, help="reads of published vectors")
    args = parser.parse_args()

    one = _run(Settings(), args)
    with redis_of(Settings(), cluster=True) as on_cluster:
        cluster = _run(on_cluster, args)

    print(f"{'ms':<44}{'one Redis':>12}{'cluster':>12}{'cluster/one':>13}")
    rows = [
        ("full", f"publish {args.items:,} items"),
        ("changed", f"publish {args.changed:,} changed items (median)"),
        ("read", f"read {args.changed:,} published vectors (median)"),
    ]
    for key, label in rows:
        print(f"{label:<44}{one[key]:>12.1f}{cluster[key]:>12.1f}{cluster[key] / one[key]:>12.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
