"""One typed settings object, read from ``SIYU_*`` environment variables and ``.env``.

Every setting has a type, a default that matches the local stack started by
``make up`` (``deploy/local/``), and a description. Settings are validated at
start-up; a bad value is reported in one line naming the variable.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipeline.contract.events import MAX_EVENTS_PER_ENVELOPE
from pipeline.errors import ConfigError

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class KafkaSettings(BaseSettings):
    """Kafka: where the brokers are, and the topics the pipeline uses."""

    kafka_bootstrap: str = Field(
        default="127.0.0.1:19092",
        description="Kafka bootstrap servers, comma-separated host:port.",
    )
    app_id: str = Field(
        default="siyu",
        description="Faust application id: consumer group and prefix of internal topics.",
    )
    topic_events: str = Field(default="siyu.events", description="Where brand apps send events.")
    topic_dead_letters: str = Field(
        default="siyu.dead-letters",
        description="Rejected input: original bytes as value, reason and source in headers.",
    )
    topic_rows: str = Field(
        default="siyu.rows", description="Row changes (batches) for the ClickHouse sink."
    )
    topic_by_user: str = Field(
        default="siyu.by-user", description="Messages for user state, partitioned by user."
    )
    topic_by_share: str = Field(
        default="siyu.by-share", description="Messages for share state, partitioned by share."
    )
    topic_by_sharer: str = Field(
        default="siyu.by-sharer",
        description="Messages for referrer (KOC) state, partitioned by sharer.",
    )
    topic_partitions: int = Field(
        default=4, ge=1, description="Partitions of topics the worker creates."
    )
    topic_replication: int = Field(
        default=1, ge=1, description="Replication factor of topics the worker creates."
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, v: str) -> str:
        for part in v.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {v!r}")
        return v

    @property
    def kafka_broker_urls(self) -> list[str]:
        """Bootstrap servers as Faust broker URLs."""
        return [f"kafka://{p.strip()}" for p in self.kafka_bootstrap.split(",")]

    def agent_topics(self) -> list[str]:
        """The topics the worker's agents read, as the group ``app_id``: the events topic
        and the processors' ``by-*`` topics."""
        return [self.topic_events, self.topic_by_user, self.topic_by_share, self.topic_by_sharer]

    def sink_topics(self) -> list[str]:
        """The topics the ClickHouse sink reads, as the group ``<app_id>-sink``."""
        return [self.topic_rows, self.topic_dead_letters]


class ClickHouseSettings(BaseSettings):
    """ClickHouse, and the sink that writes to it."""

    clickhouse_url: str = Field(
        default="clickhouse://default:@127.0.0.1:19000/siyu",
        description="ClickHouse native-protocol URL: clickhouse://user:password@host:port/database"
        "; a cluster's other nodes may follow as ?alt_hosts=host:port,host:port (failover).",
    )
    clickhouse_cluster: str | None = Field(
        default=None,
        description="Cluster name from the servers' <remote_servers>: `siyu migrate` creates "
        "the schema ON CLUSTER (Replicated tables behind Distributed ones) and the sink inserts "
        "through it synchronously. Unset: one server.",
    )
    clickhouse_replica_path: str = Field(
        default="/clickhouse/tables/{shard}/{database}/{table}",
        description="ZooKeeper path of each replicated table in cluster mode: siyu fills "
        "{database} and {table}, the servers fill their macros such as {shard}.",
    )
    clickhouse_insert_quorum: int = Field(
        default=0,
        ge=0,
        description="Cluster mode: replicas that must have an insert before it counts as done "
        "(ClickHouse insert_quorum; 0 = one replica). More is safer against losing a node's "
        "disk, but inserts wait while fewer replicas are up.",
    )

    # The sink.
    sink_max_rows: int = Field(
        default=5000, ge=1, description="Most rows per ClickHouse insert (per table)."
    )
    sink_max_messages: int = Field(
        default=500, ge=1, description="Most row-batch messages the sink takes per flush."
    )
    sink_flush_seconds: float = Field(
        default=1.0, gt=0, description="Longest a row waits before its batch is inserted, seconds."
    )
    sink_retry_max_seconds: float = Field(
        default=30.0, gt=0, description="Cap of the exponential backoff between insert retries."
    )

    @field_validator("clickhouse_url")
    @classmethod
    def _check_clickhouse_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("clickhouse", "clickhouses") or not parts.hostname:
            raise ValueError(f"expected clickhouse://user:password@host:port/database, got {v!r}")
        return v

    @field_validator("clickhouse_cluster")
    @classmethod
    def _check_clickhouse_cluster(cls, v: str | None) -> str | None:
        if v and not (v.isascii() and v.isidentifier()):
            raise ValueError(f"expected a cluster name (letters, digits, _), got {v!r}")
        return v or None

    @property
    def clickhouse_database(self) -> str:
        """Database name from the URL (default ``siyu``)."""
        return urlsplit(self.clickhouse_url).path.strip("/") or "siyu"

    @property
    def clickhouse_address(self) -> str:
        """host:port of ClickHouse, for messages."""
        parts = urlsplit(self.clickhouse_url)
        return f"{parts.hostname}:{parts.port or 9000}"


class WorkerSettings(BaseSettings):
    """A worker process: its web port, state store, batches and watchdogs."""

    worker_web_port: int = Field(
        default=6066, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics."
    )
    worker_web_host: str = Field(default="127.0.0.1", description="Address the web port binds.")
    store: Literal["memory", "rocksdb"] = Field(
        default="memory",
        description="Faust table store; rocksdb needs `pip install siyu[rocksdb]`.",
    )
    data_dir: str = Field(
        default=".local/worker",
        description="Directory for worker state; with the rocksdb store, one worker's own "
        "(a second worker on it stops at start).",
    )
    rocksdb_write_buffer_mb: int = Field(
        default=8,
        ge=1,
        description="RocksDB memtable size of each table partition's database (up to 3 "
        "of them each); Faust's own default is 64.",
    )
    rocksdb_block_cache_mb: int = Field(
        default=16,
        ge=1,
        description="RocksDB read cache of each table partition's database; Faust's own "
        "default is 2048, per database.",
    )
    standby_replicas: int = Field(
        default=1,
        ge=0,
        description="Standby copies of each table partition kept warm on other workers "
        "(Faust table_standby_replicas), so a failover replays little changelog; "
        "0 saves their memory and disk.",
    )
    ingest_batch: int = Field(
        default=500, ge=1, description="Most messages the ingest agent takes per batch."
    )
    processor_batch: int = Field(
        default=200, ge=1, description="Most messages a state agent takes per batch."
    )
    max_state_bytes: int = Field(
        default=32 << 20,
        ge=1 << 20,
        le=96 << 20,
        description="Largest state one key may reach, in bytes (the tables' changelog topics "
        "get it as max.message.bytes). A share clicked by 40,000 users within the attribution "
        "window holds about 1.3 MB of watchers, past Kafka's default of 1 MiB; 32 MiB holds "
        "about a million. At most 96 MiB: a produce request must fit Kafka's "
        "socket.request.max.bytes (100 MiB by default).",
    )
    batch_max_bytes: int = Field(
        default=16 << 20,
        ge=1,
        description="Most bytes of input an agent decodes and steps at once. A batch taken "
        "from a backlog can hold hundreds of thousands of events (500 envelopes of up to "
        "1,000); it is handled in parts of this size, each published and written before "
        "the next, so a worker's memory does not grow with its input's envelopes.",
    )
    ingest_window_s: float = Field(
        default=0.5,
        gt=0,
        description="Longest the ingest agent collects messages before it handles them as a "
        "batch, seconds. Under live traffic a batch closes on this timer, not on its size: "
        "a longer window costs less CPU per event and adds up to this much latency.",
    )
    processor_window_s: float = Field(
        default=0.1,
        gt=0,
        description="Longest a state agent collects messages before it handles them as a "
        "batch, seconds. The same trade as SIYU_INGEST_WINDOW_S, paid at each hop of a "
        "causal chain, so it also slows the end of a backlog (docs/performance.md has a "
        "measurement of 0.1 s against 0.3 s).",
    )

    session_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds before a silent worker's partitions move to the others "
        "(consumer group session timeout): how fast a crashed worker is replaced. Brokers "
        "accept 6 to 1800 s by default (group.min/max.session.timeout.ms); the worker checks "
        "at start.",
    )
    watermark_hops: int = Field(
        default=8,
        ge=1,
        description="Rounds of the by-* topics being processed to their end before ingest "
        "announces event-time progress (pipeline/worker/watermarks.py): bounds the causal chains "
        "(agent to agent) a watermark never overtakes.",
    )
    memory_trim_s: float = Field(
        default=5.0,
        ge=0,
        description="Every this many seconds, a worker hands memory that glibc's allocator "
        "keeps free back to the system (malloc_trim), so a backlog's peak does not stay "
        "resident; 0 turns it off.",
    )
    stall_timeout_s: float = Field(
        default=120.0,
        ge=0,
        description="A worker whose owned partitions have input waiting but no committed "
        "progress for this long exits with code 75 for its supervisor to restart it "
        "(pipeline/worker/watchdog.py); 0 turns the watchdog off.",
    )


class CollectorSettings(BaseSettings):
    """The collector, the HTTP front door for brand apps (docs/collector.md)."""

    collector_host: str = Field(default="127.0.0.1", description="Address the collector binds.")
    collector_port: int = Field(
        default=8090,
        ge=0,
        le=65535,
        description="Port of the collector: POST /v1/events, /healthz, /readyz and /metrics.",
    )
    collector_max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body the collector reads, bytes; a larger one gets 413.",
    )
    collector_max_events: int = Field(
        default=MAX_EVENTS_PER_ENVELOPE,
        ge=1,
        le=MAX_EVENTS_PER_ENVELOPE,
        description="Most events one request may carry; more gets 413.",
    )
    collector_keys: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description='API keys as JSON {"<sha256 hex of the key>": "<brand_id>", ...}; '
        "only hashes are configured (`siyu collector-key new BRAND` makes a key and its hash).",
    )
    collector_keys_file: str | None = Field(
        default=None,
        description="A JSON file of more key hashes, same shape as SIYU_COLLECTOR_KEYS.",
    )
    collector_max_inflight_requests: int = Field(
        default=128,
        ge=1,
        description="Requests the collector handles at once; beyond that it answers 429.",
    )
    collector_max_inflight_bytes: int = Field(
        default=64 * 1_048_576,
        ge=1024,
        description="Request bytes held at once (read or waiting for Kafka); beyond: 429.",
    )
    collector_send_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Longest wait for Kafka to confirm a request's events; then 503.",
    )
    collector_retry_after_s: int = Field(
        default=2, ge=1, description="Retry-After seconds of the collector's 429 and 503 answers."
    )

    @field_validator("collector_keys", mode="before")
    @classmethod
    def _parse_collector_keys(cls, v: object) -> object:
        # Parsed here rather than by pydantic-settings, whose JSON error names no variable.
        if isinstance(v, str):
            try:
                return json.loads(v) if v.strip() else {}
            except json.JSONDecodeError as err:
                raise ValueError(f"not JSON ({err.msg} at char {err.pos})") from None
        return v

    @field_validator("collector_keys")
    @classmethod
    def _check_collector_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for digest, brand in v.items():
            if not _SHA256_HEX.fullmatch(digest):
                raise ValueError(
                    f"key {digest[:12]!r}... is not a sha256 hex digest; configure the hash "
                    "printed by `siyu collector-key hash`, never the key itself"
                )
            if not 1 <= len(brand) <= 64:
                raise ValueError(f"brand_id of key {digest[:12]}... must be 1-64 characters")
        return {digest.lower(): brand for digest, brand in v.items()}


class DomainSettings(BaseSettings):
    """The domain rules' parameters (docs/domain.md), and the sweeps that expire old state."""

    attribution_window_s: int = Field(
        default=7 * 86_400, ge=0, description="Attribution window, seconds of event time."
    )
    allowed_lateness_s: int = Field(
        default=86_400,
        ge=0,
        description="Events older than the watermark minus this are too late for attribution.",
    )
    max_event_ahead_s: int = Field(
        default=900,
        ge=0,
        description="Most seconds an event's occurred_at may be after it was sent (its Kafka "
        "message's timestamp; the collector's receive time). Later events are dead-lettered "
        "as occurred_in_future: a sender's clock running ahead would otherwise push the "
        "watermark ahead and make everyone's correct events look late.",
    )
    koc_min_buyers: int = Field(
        default=2, ge=1, description="Distinct other buyers a user's shares must bring (KOC N)."
    )
    koc_window_s: int = Field(
        default=30 * 86_400, ge=0, description="Window of the KOC rule, seconds (KOC D)."
    )
    sweep_every_s: int = Field(
        default=3600,
        ge=1,
        description="Event time the watermark must advance before expired state is swept.",
    )
    sweep_chunk: int = Field(
        default=2000,
        ge=1,
        description="Keys a sweep of expired state handles at once (published and written "
        "before the next): bounds a sweep's memory to this many states.",
    )
    state_cache_keys: int = Field(
        default=200_000,
        ge=1,
        description="Parsed states a worker keeps in memory per processor (user, share, "
        "sharer), the least recently used dropped first; a dropped key is read back from its "
        "table when it comes again. Bounds a worker's memory (about 4 KB per user state).",
    )


class Settings(
    KafkaSettings, ClickHouseSettings, WorkerSettings, CollectorSettings, DomainSettings
):
    """siyu configuration. Environment variable = ``SIYU_`` + upper-case field name.

    One object; its fields are declared by concern in the classes above."""

    model_config = SettingsConfigDict(
        env_prefix="SIYU_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of siyu processes."
    )


def load_settings() -> Settings:
    """Read and validate settings; a bad value raises :class:`ConfigError` naming the variable."""
    try:
        return Settings()
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        raise ConfigError(
            f"invalid setting SIYU_{field.upper()}: {first['msg']} "
            "(set it in the environment or in .env)"
        ) from None


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
