"""Settings from `RECSTREAM_*` variables, built once in an entry point and passed down."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

NAMESPACE_NAME = re.compile(r"([a-z0-9][a-z0-9_-]{0,62})?")

EXACT_FACTORY = "IDMap2,Flat"


class Settings(BaseSettings):
    """Every knob of a recstream process; see the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,...]"
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (db index included)")
    redis_prefix: str = Field("recstream:", description="prefix of every Redis key")
    redis_cluster: Literal["auto", "yes", "no"] = Field(
        "auto",
        description="whether RECSTREAM_REDIS_URL is a Redis Cluster node: auto asks it at start",
    )
    redis_shards: int = Field(
        16,
        ge=1,
        le=16_384,
        description="on a Redis Cluster: slots a namespace's users, items, idempotency records "
        "and counters are sharded over (fixed for the life of its data)",
    )
    redis_timeout_s: float = Field(
        0.5, gt=0, description="longest an API request waits on Redis before its fallback"
    )
    redis_socket_timeout_s: float = Field(
        10.0,
        gt=0,
        description="longest a worker, the trainer or a command waits on one Redis reply "
        "before it counts Redis as away and retries (a silent partition is noticed then, not "
        "after the kernel's TCP timeout); above the slowest publish",
    )
    namespace: str = Field(
        "",
        pattern=f"^{NAMESPACE_NAME.pattern}$",
        description="pin a process to one namespace (default: follow `recstream promote`)",
    )
    topic_prefix: str = Field("recstream.", description="prefix of every Kafka topic name")
    partitions: int = Field(6, ge=1, description="partitions of topics created at start-up")
    replication_factor: int = Field(
        1, ge=1, description="replication of topics created at start-up"
    )
    app_id: str = Field("recstream", min_length=1, description="Faust app id = consumer group")
    trending_half_life_s: float = Field(
        3 * 24 * 3600, gt=0, description="half-life of the decayed (trending) popularity"
    )
    dedup_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="how long an event_id is remembered")
    feed_retention_s: float = Field(
        600.0, gt=0, description="how long item feed entries live (replicas further behind reload)"
    )
    user_ttl_s: int = Field(
        90 * 24 * 3600, ge=1, description="how long a user's Redis state outlives their last event"
    )
    history_len: int = Field(200, ge=1, description="interactions kept per user history")
    purchased_kept: int = Field(
        1_000, ge=1, description="items kept per user's purchased set (the most recently ordered)"
    )
    popular_items_kept: int = Field(
        100_000,
        ge=1,
        description="items each popularity counter keeps (the most popular; producer-chosen "
        "ids would grow it without bound); cut back, at most 1,000 a script, once it reaches "
        "twice that",
    )
    repeats: bool = Field(
        False,
        description="recommend users their own past items again (groceries: yes; films: no); "
        "a request's `repeats` overrides it",
    )
    max_event_bytes: int = Field(64 * 1024, ge=256, description="largest accepted event payload")
    trainer_lease_s: float = Field(
        10.0,
        gt=0,
        description="a trainer's lease on its model in Redis: a second trainer waits until the "
        "first stops or stays silent this long",
    )
    max_clock_skew_s: float = Field(
        300.0,
        ge=0,
        description="how far an event's ts may lie after its arrival (the record's Kafka "
        "timestamp; now for HTTP) before it is rejected",
    )
    max_event_age_s: float | None = Field(
        None,
        gt=0,
        description="reject events older than this before their arrival (default: any age, "
        "so replays of old logs apply)",
    )
    batch_size: int = Field(
        500, ge=1, description="most events a worker applies per Redis call (of one fetch)"
    )
    fetch_max_wait_ms: int = Field(20, ge=1, description="broker long-poll wait of the consumer")
    session_timeout_s: float = Field(10.0, gt=0, description="consumer group session timeout")
    commit_interval_s: float = Field(1.0, gt=0, description="how often processed offsets commit")
    data_dir: Path = Field(Path(".recstream"), description="worker and stack state directory")
    api_host: str = Field("127.0.0.1", description="HTTP API bind address")
    api_port: int = Field(8000, ge=0, le=65535, description="HTTP API port")
    api_processes: int = Field(
        1, ge=1, le=256, description="API processes sharing the port (SO_REUSEPORT)"
    )
    log_level: str = Field("info", description="log level of workers and API")
    api_keys: str | None = Field(
        None,
        description="API keys as JSON, one entry or a list (see `recstream keys new`); without "
        "a key here or in the keys file the API refuses to start unless insecure_open is set",
    )
    insecure_open: bool = Field(
        False,
        description="serve every route, admin included, with no API key: local demos and "
        "tests only (`recstream api --insecure-open`)",
    )
    api_keys_file: Path | None = Field(
        None,
        description="file of API key entries, where `recstream keys new` adds them (default: "
        "<data_dir>/api-keys.json, read when it exists)",
    )
    pseudonym_key: SecretStr | None = Field(
        None, description="HMAC key: user ids are pseudonymised at ingest and in queries"
    )
    api_key_rate_per_s: float = Field(1_000.0, gt=0, description="requests/s per key (default)")
    api_key_burst: int = Field(2_000, ge=1, description="requests a key may send at once")
    vector_dim: int = Field(64, ge=1, description="width of user and item vectors")
    model_dir: Path | None = Field(
        None, description="checkpoints = model versions, shared by trainer, workers, API"
    )
    publish_interval_s: float = Field(1.0, gt=0, description="longest wait between model versions")
    publish_events: int = Field(
        5_000, ge=1, description="events learned that trigger a model version sooner"
    )
    train_batch: int = Field(512, ge=1, description="most events the trainer fetches at once")
    train_step_events: int = Field(
        32, ge=1, description="events the trainer gathers before learning (or train_wait_ms)"
    )
    train_wait_ms: int = Field(
        250, ge=0, description="longest an event waits in the trainer before it is learned"
    )
    checkpoint_keep: int = Field(10, ge=2, description="newest model versions kept on disk")
    checkpoint_history_s: float = Field(
        600.0,
        ge=0,
        description="besides those, one version per minute this far back is kept on disk "
        "(what `recstream model rollback` can return to)",
    )
    checkpoint_state_s: float = Field(
        60.0,
        ge=0,
        description="seconds between versions that carry the trainer's full state (user "
        "histories, learned ids, optimiser); the others save the serving part only and are "
        "neither resumed from nor rolled back to (0: every version carries it, a cost that "
        "grows with the users kept)",
    )
    trainer_dedup_window: int = Field(
        200_000, ge=1, description="recent event ids the trainer remembers to skip duplicates"
    )
    trainer_max_users: int = Field(
        100_000, ge=1, description="user histories the trainer keeps (least recently active go)"
    )
    item_admit_after: int = Field(
        1,
        ge=1,
        description="sightings (events) before an item id gets an embedding row of its own; "
        "until then it shares the unknown row and is not published",
    )
    item_expire_s: float = Field(
        180 * 86_400.0,
        ge=0,
        description="event time an item may go unseen before its row is freed and its vector "
        "leaves the served catalogue (it comes back as new if seen again; 0: never)",
    )
    trainer_nice: int = Field(
        10, ge=0, le=19, description="CPU niceness of the trainer: serving and ingest go first"
    )
    trainer_device: str | None = Field(None, description="cpu or cuda (default: cuda if present)")
    torch_threads: int = Field(1, ge=1, description="torch CPU threads per process")
    heap_trim_s: float = Field(
        30.0, ge=0, description="seconds between handing freed heap back to the OS (0: off)"
    )
    embed_batch: int = Field(256, ge=1, description="users a worker re-embeds per model call")
    prepare_users: int = Field(
        1_000,
        ge=0,
        description="users an API process follows; before it serves a new model version it "
        "re-embeds those who asked again within prepare_window_s of their previous request, "
        "newest first (0: none; a user is then embedded on their first request of a version)",
    )
    prepare_window_s: float = Field(
        30.0,
        gt=0,
        description="a user asking again this soon after their previous request is prepared "
        "for each new version until they stop",
    )
    worker_metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus port of a worker (0: none)"
    )
    trainer_metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus port of the trainer (0: none)"
    )
    index_factory: str = Field(
        EXACT_FACTORY,
        description="FAISS index: IDMap2,Flat (exact), IDMap2,HNSW32, IDMap2,IVF1024,Flat",
    )
    index_nprobe: int = Field(
        32, ge=1, description="inverted lists an IVF index search visits (recall against speed)"
    )
    index_ef_search: int = Field(
        128, ge=1, description="breadth of an HNSW index search (recall against speed)"
    )
    index_snapshot_s: float = Field(
        300.0,
        ge=0,
        description="how often an API process snapshots its index to start from (0: never)",
    )
    index_shared: bool | None = Field(
        None,
        description="API processes of this host map one copy of an exact index from the "
        "snapshot directory, each holding only the changes since (default: when "
        "api_processes > 1 and index_factory is IDMap2,Flat)",
    )

    @model_validator(mode="after")
    def _shared_index_is_exact(self) -> Settings:
        if self.index_shared and self.index_factory != EXACT_FACTORY:
            raise ValueError(
                f"index_shared maps an exact index: it needs index_factory {EXACT_FACTORY}, "
                f"not {self.index_factory}"
            )
        return self

    @property
    def shares_index(self) -> bool:
        """Whether the API processes of this host share one mapped index (`index_shared`)."""
        if self.index_shared is not None:
            return self.index_shared
        return self.api_processes > 1 and self.index_factory == EXACT_FACTORY

    @property
    def index_snapshot_dir(self) -> Path:
        """Where the API processes of this host keep the namespace's index snapshots: one
        directory per Redis key prefix and index type (other ones cannot be restored)."""
        parts = []
        kind = "shared-flat" if self.shares_index else self.index_factory
        for raw in (self.keys_prefix, f"{kind}-{self.vector_dim}"):
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", raw)[:60]
            parts.append(f"{safe}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}")
        return self.data_dir / "index-snapshots" / parts[0] / parts[1]

    @property
    def keys_file(self) -> Path:
        """Where API key entries are kept: `api_keys_file`, else `data_dir/api-keys.json`."""
        return self.api_keys_file or self.data_dir / "api-keys.json"

    @property
    def keys_file_read(self) -> Path | None:
        """The keys file the API reads: one named explicitly (which must exist), else the
        default one when it exists."""
        if self.api_keys_file is not None or self.keys_file.exists():
            return self.keys_file
        return None

    @property
    def checkpoint_dir(self) -> Path:
        """Where the namespace's model versions live: under `model_dir`, else `data_dir/models`."""
        base = self.model_dir if self.model_dir is not None else self.data_dir / "models"
        return base / "namespaces" / self.namespace if self.namespace else base

    @property
    def keys_prefix(self) -> str:
        """The Redis key prefix of the namespace's state (the base's is `redis_prefix`)."""
        return f"{self.redis_prefix}ns:{self.namespace}:" if self.namespace else self.redis_prefix

    def in_namespace(self, name: str) -> Settings:
        """These settings pinned to namespace `name` ('' is the base namespace)."""
        if not NAMESPACE_NAME.fullmatch(name):
            raise ValueError(f"bad namespace name {name!r}: use a-z, 0-9, _ and -, at most 63")
        return self.model_copy(update={"namespace": name})


# Settings by what they configure: a command's `--help` names the groups it reads, and
# `recstream config` prints them all; texts come from the descriptions above, so they never
# drift from the code.
GROUPS: dict[str, tuple[str, ...]] = {
    "broker": ("kafka_bootstrap", "topic_prefix", "partitions", "replication_factor"),
    "redis": (
        "redis_url",
        "redis_prefix",
        "redis_cluster",
        "redis_shards",
        "namespace",
        "redis_timeout_s",
        "redis_socket_timeout_s",
    ),
    "events": (
        "max_event_bytes",
        "max_clock_skew_s",
        "max_event_age_s",
        "pseudonym_key",
        "dedup_ttl_s",
    ),
    "ingest": (
        "app_id",
        "batch_size",
        "fetch_max_wait_ms",
        "session_timeout_s",
        "commit_interval_s",
        "history_len",
        "purchased_kept",
        "popular_items_kept",
        "trending_half_life_s",
        "user_ttl_s",
        "embed_batch",
        "worker_metrics_port",
    ),
    "model": ("data_dir", "model_dir", "vector_dim", "torch_threads", "heap_trim_s"),
    "trainer": (
        "publish_interval_s",
        "publish_events",
        "train_batch",
        "train_step_events",
        "train_wait_ms",
        "checkpoint_keep",
        "checkpoint_history_s",
        "checkpoint_state_s",
        "trainer_dedup_window",
        "trainer_max_users",
        "item_admit_after",
        "item_expire_s",
        "trainer_nice",
        "trainer_device",
        "trainer_lease_s",
        "feed_retention_s",
        "trainer_metrics_port",
    ),
    "api": (
        "api_host",
        "api_port",
        "api_processes",
        "api_keys",
        "api_keys_file",
        "insecure_open",
        "api_key_rate_per_s",
        "api_key_burst",
        "repeats",
        "index_factory",
        "index_nprobe",
        "index_ef_search",
        "index_snapshot_s",
        "index_shared",
        "prepare_users",
        "prepare_window_s",
    ),
    "logging": ("log_level",),
}


def env_name(field: str) -> str:
    return f"RECSTREAM_{field.upper()}"


def shown(settings: Settings, field: str) -> str:
    """A setting's value as help and `recstream config` print it: secrets masked."""
    value = getattr(settings, field)
    if value is None:
        return "(unset)"
    if isinstance(value, SecretStr) or (field == "api_keys" and value):
        return "********"
    if field == "redis_url":
        parts = urlsplit(str(value))
        if parts.password:
            user = parts.username or ""
            host = parts.netloc.rsplit("@", 1)[1]
            return urlunsplit(parts._replace(netloc=f"{user}:********@{host}"))
    return str(value)


def fields_of(reads: Sequence[str]) -> list[str]:
    """The settings named by `reads`: group names and single setting names, in order."""
    fields: list[str] = []
    for name in reads:
        for field in GROUPS.get(name, (name,)):
            if field not in Settings.model_fields:
                raise KeyError(f"no setting {field!r}")
            if field not in fields:
                fields.append(field)
    return fields


def settings_lines(settings: Settings, reads: Sequence[str]) -> list[str]:
    """Two lines per setting `reads` names: its variable and value now, what it does."""
    lines = []
    for field in fields_of(reads):
        description = Settings.model_fields[field].description or ""
        lines.append(f"  {env_name(field)}={shown(settings, field)}\n      {description}")
    return lines
