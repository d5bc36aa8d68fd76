"""Which settings each command reads, said in its `--help` and by `recstream config`.

Settings are grouped by what they configure; a command names the groups it reads and what
must be running for it. Texts come from the settings' own descriptions, so help never
drifts from the code.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from stream.config import Settings

GROUPS: dict[str, tuple[str, ...]] = {
    "broker": ("kafka_bootstrap", "topic_prefix", "partitions", "replication_factor"),
    "redis": (
        "redis_url",
        "redis_prefix",
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
        "prepare_users",
        "prepare_window_s",
    ),
    "logging": ("log_level",),
}

NEEDS = {
    "broker": "a Kafka-protocol broker at RECSTREAM_KAFKA_BOOTSTRAP",
    "redis": "Redis at RECSTREAM_REDIS_URL",
    "model": "the model directory (RECSTREAM_MODEL_DIR, default <RECSTREAM_DATA_DIR>/models)",
}


def env_name(field: str) -> str:
    return f"RECSTREAM_{field.upper()}"


def shown(settings: BaseSettings, field: str) -> str:
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
