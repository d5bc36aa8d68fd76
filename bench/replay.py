"""Ops benchmark: replay throughput from a file and from Kafka, time to rebuild (prints figures).

    python -m bench.replay [--events 100000 1000000] [--json OUT] [--redis-cluster]

For each size, on fresh topics and a fresh key prefix: write a synthetic JSONL log; `replay
--from-file` it into the topics (validate + produce, acknowledged); `replay --from-kafka` the
whole range into Redis (read + decode + apply, every event new); then `rebuild --into b` from
the log (read + apply, train, publish + embed every user). Baseline in the same run: the same
events applied straight to Redis by the store, no broker (the Redis side's ceiling). Starts
the local stack unless RECSTREAM_KAFKA_BOOTSTRAP points at a broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from bench.load import redis_of
from store.redis_keys import delete_prefixed
from stream.config import Settings
from stream.events.files import read_events
from stream.events.handlers import effect_of
from stream.events.samples import sample_events
from stream.local.stack import local_stack
from stream.ops.rebuild import rebuild
from stream.ops.replay_file import replay_file
from stream.ops.replay_kafka import replay_kafka
from stream.wiring import blocking_redis_client, interaction_store, redis_client


def _isolated(settings: Settings, tag: str, data_dir: Path) -> Settings:
    return settings.model_copy(
        update={
            "redis_prefix": f"bench:{tag}:",
            "topic_prefix": f"bench-{tag}.",
            "app_id": f"bench-{tag}",
            "data_dir": data_dir,
            "model_dir": None,
            "log_level": "warning",
        }
    )


async def _redis_only(settings: Settings, log: Path) -> float:
    """Events/s of the store alone applying the same events (batches of 500)."""
    client = redis_client(settings)
    store = interaction_store(settings, client)
    effects = [effect_of(r.event) for r in read_events(str(log)) if r.event is not None]
    began = time.perf_counter()
    for start in range(0, len(effects), 500):
        await store.apply_many(effects[start : start + 500])
    seconds = time.perf_counter() - began
    await client.aclose()
    return len(effects) / seconds


def measure(base: Settings, events: int, work: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    settings = _isolated(base, tag, work / tag)
    log = work / f"{tag}.jsonl"
    with log.open("w") as out:
        for event in sample_events(events, users=max(1_000, events // 20), items=50_000, seed=3):
            out.write(event.to_json().decode() + "\n")
    client = blocking_redis_client(settings)
    try:
        print(f"{events:,} events: replay from the file", file=sys.stderr)
        began = time.perf_counter()
        sent = replay_file(settings, str(log)).sent
        file_s = time.perf_counter() - began

        print(f"{events:,} events: replay from Kafka into Redis", file=sys.stderr)
        began = time.perf_counter()
        summary = replay_kafka(settings, since_ms=0)
        kafka_s = time.perf_counter() - began

        print(f"{events:,} events: rebuild into a namespace", file=sys.stderr)
        began = time.perf_counter()
        built = rebuild(settings, "b")
        rebuild_s = time.perf_counter() - began

        baseline = asyncio.run(_redis_only(settings.in_namespace("baseline"), log))
        return {
            "events": events,
            "replay_file_events_per_s": sent / file_s,
            "replay_kafka_events_per_s": summary.messages / kafka_s,
            "replay_kafka_applied": summary.applied,
            "redis_only_events_per_s": baseline,
            "rebuild_s": rebuild_s,
            "rebuild_read_apply_s": built.read_s,
            "rebuild_train_s": built.train_s,
            "rebuild_publish_embed_s": built.publish_s,
            "rebuild_users": built.users,
            "rebuild_items": built.items,
        }
    finally:
        delete_prefixed(client, settings.redis_prefix)
        client.close()
        log.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--json", dest="json_out", default=None, help="write the figures here")
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="keep the state in a local 3-primary Redis Cluster instead of one Redis",
    )
    args = parser.parse_args()
    rows = []
    settings = Settings()
    torch.set_num_threads(settings.torch_threads)  # as `recstream rebuild` sets it
    with (
        local_stack(settings) as stack,
        redis_of(stack, args.redis_cluster) as base,
        tempfile.TemporaryDirectory() as work,
    ):
        for events in args.events:
            rows.append(measure(base, events, Path(work)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(
        f"{'events':>10} {'file ev/s':>10} {'kafka ev/s':>11} {'redis-only':>11} "
        f"{'rebuild s':>10} {'read':>7} {'train':>7} {'publish':>8}"
    )
    for row in rows:
        print(
            f"{row['events']:>10,} {row['replay_file_events_per_s']:>10,.0f} "
            f"{row['replay_kafka_events_per_s']:>11,.0f} {row['redis_only_events_per_s']:>11,.0f} "
            f"{row['rebuild_s']:>10.1f} {row['rebuild_read_apply_s']:>7.1f} "
            f"{row['rebuild_train_s']:>7.1f} {row['rebuild_publish_embed_s']:>8.1f}"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
