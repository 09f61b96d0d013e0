"""Kafka topics siyu reads and writes: specs from settings, created when missing, checked.

The worker calls :func:`ensure_topics` before starting: missing topics are created with the
configured partitions, replication and configs; an existing topic that disagrees (partition
count, cleanup policy) stops the start-up with a message saying what differs, because keyed
state would silently split across the wrong partitions otherwise. A size limit that is too
low (the changelogs' ``max.message.bytes``) is raised in place. It also checks, with
:func:`check_session_timeout`, that the brokers accept the consumer group session timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.domain import ProcessorName
from pipeline.errors import ConfigError, ServiceUnavailable, TopicMismatch
from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as siyu needs it."""

    name: str
    partitions: int
    replication: int
    configs: dict[str, str] = field(default_factory=dict)
    #: Numeric configs the topic needs at least: set on creation, raised on an existing topic
    #: that has less (raising a size limit changes no data, so siyu does it, not the user).
    at_least: dict[str, int] = field(default_factory=dict)


def topic_specs(s: Settings) -> list[TopicSpec]:
    """The topics of the pipeline, including the state tables' changelogs.

    The three ``by-*`` topics carry messages between the state agents; their partition
    count must equal the changelogs', which is why all share ``SIYU_TOPIC_PARTITIONS``.
    """
    names = (
        s.topic_events,
        s.topic_dead_letters,
        s.topic_rows,
        s.topic_by_user,
        s.topic_by_share,
        s.topic_by_sharer,
    )
    specs = [
        TopicSpec(name, s.topic_partitions, s.topic_replication, {"cleanup.policy": "delete"})
        for name in names
    ]
    # The state tables' changelogs (named as Faust names them): compacted, and with as many
    # partitions as the by-* topics, or a key's state would be restored into the wrong
    # partition. Created here so a mismatch is caught before Faust starts.
    specs += [
        TopicSpec(
            changelog_topic(s.app_id, table),
            s.topic_partitions,
            s.topic_replication,
            {"cleanup.policy": "compact"},
            # One record is one key's whole state, which can outgrow Kafka's default 1 MiB
            # (a share clicked by tens of thousands of users): the broker would refuse it,
            # and the worker would retry that batch for ever.
            {"max.message.bytes": s.max_state_bytes},
        )
        for table in TABLES
    ]
    return specs


def state_table(processor: ProcessorName) -> str:
    """The name of ``processor``'s Faust state table."""
    return f"state-{processor.value}"


#: The Faust table of ingest's record of the offsets it has processed (what makes a replayed
#: events topic a no-op, see :mod:`pipeline.worker.ingest`).
INGEST_OFFSETS_TABLE = "ingest-offsets"
#: The worker's Faust tables: one state table per processor, and ingest's offsets.
TABLES = (*(state_table(name) for name in ProcessorName), INGEST_OFFSETS_TABLE)


def changelog_topic(app_id: str, table: str) -> str:
    """Faust's changelog topic of ``table`` (a name in :data:`TABLES`)."""
    return f"{app_id}-{table}-changelog"


def admin_client(bootstrap: str) -> KafkaAdminClient:
    """An admin client, or :class:`ServiceUnavailable` with what to do."""
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="siyu-admin", request_timeout_ms=15000
        )
    except (KafkaError, OSError) as err:
        raise ServiceUnavailable(
            f"Kafka at {bootstrap} is not reachable ({type(err).__name__}); "
            "start the local stack with `make up`, or set SIYU_KAFKA_BOOTSTRAP"
        ) from None


def resource_configs(
    admin: KafkaAdminClient, resources: list[ConfigResource]
) -> dict[str, dict[str, str]]:
    """Every config of each of ``resources`` (topics or brokers): ``{name: {key: value}}``."""
    result: Any = admin.describe_configs(resources, config_filter="all")
    found: dict[str, dict[str, str]] = {}
    for by_name in result.values():
        for name, entries in by_name.items():
            found[str(name)] = {
                key: str(value.get("value") if isinstance(value, dict) else value)
                for key, value in entries.items()
            }
    return found


def topic_configs(admin: KafkaAdminClient, name: str) -> dict[str, str]:
    return resource_configs(admin, [ConfigResource(ConfigResourceType.TOPIC, name)]).get(name, {})


def ensure_topics(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create missing topics and check existing ones. Returns the names created."""
    admin = admin_client(bootstrap)
    try:
        return _ensure_topics(admin, specs)
    except KafkaError as err:
        raise ServiceUnavailable(
            f"Kafka at {bootstrap} failed while siyu checked its topics: {err}"
        ) from None
    finally:
        admin.close()


def _ensure_topics(admin: KafkaAdminClient, specs: list[TopicSpec]) -> list[str]:
    created: list[str] = []
    for _ in range(3):
        existing = set(admin.list_topics())
        missing = [t for t in specs if t.name not in existing]
        if not missing:
            break
        try:
            admin.create_topics(
                {
                    t.name: {
                        "num_partitions": t.partitions,
                        "replication_factor": t.replication,
                        "configs": {**t.configs, **{k: str(v) for k, v in t.at_least.items()}},
                    }
                    for t in missing
                },
                wait_for_metadata=True,
            )
            created = [t.name for t in missing]
            break
        except TopicAlreadyExistsError:
            # Another worker or collector starting at the same moment created some of them:
            # look again, and check theirs like any existing topic.
            continue
    # Existing topics (ours from before, or a concurrent creator's) must match the specs.
    existing = set(admin.list_topics())
    problems: list[str] = []
    present = [t for t in specs if t.name in existing and t.name not in created]
    described = (
        {d["name"]: d for d in admin.describe_topics([t.name for t in present])} if present else {}
    )
    for t in present:
        have = len(described[t.name]["partitions"])
        if have != t.partitions:
            problems.append(
                f"{t.name} has {have} partitions, siyu is configured for "
                f"{t.partitions} (SIYU_TOPIC_PARTITIONS)"
            )
        configs = topic_configs(admin, t.name)
        for key, want in t.configs.items():
            if configs.get(key) != want:
                problems.append(f"{t.name} has {key}={configs.get(key)}, siyu needs {want}")
        low = {k: v for k, v in t.at_least.items() if int(configs.get(k) or 0) < v}
        if low:
            admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t.name, configs=low)], incremental=True
            )
            for key, least in low.items():
                log.warning("raised %s of %s from %s to %d", key, t.name, configs.get(key), least)
    if problems:
        raise TopicMismatch(
            "existing topics disagree with the configuration: "
            + "; ".join(problems)
            + ". Fix the topics or the settings; siyu will not guess."
        )
    return created


#: The broker configs that bound a consumer group's session timeout, in milliseconds.
MIN_SESSION = "group.min.session.timeout.ms"
MAX_SESSION = "group.max.session.timeout.ms"


def session_timeout_problem(seconds: float, brokers: Mapping[str, Mapping[str, str]]) -> str | None:
    """Why Kafka would refuse ``SIYU_SESSION_TIMEOUT_S=seconds``, or None: the bounds are
    the brokers' ``group.min/max.session.timeout.ms`` (``brokers``: each broker's configs),
    the tightest of them, since any broker may coordinate the group."""
    lows = [int(c[MIN_SESSION]) for c in brokers.values() if c.get(MIN_SESSION)]
    highs = [int(c[MAX_SESSION]) for c in brokers.values() if c.get(MAX_SESSION)]
    low, high = max(lows, default=0), min(highs, default=None)
    ms = seconds * 1000
    if ms >= low and (high is None or ms <= high):
        return None
    bounds = (
        f"{low / 1000:g} to {high / 1000:g} s" if high is not None else f"{low / 1000:g} s or more"
    )
    return (
        f"SIYU_SESSION_TIMEOUT_S={seconds:g} is outside what Kafka accepts for a consumer "
        f"group's session, {bounds} (the brokers' {MIN_SESSION} and {MAX_SESSION}): a "
        "worker with it would never join its group"
    )


def check_session_timeout(bootstrap: str, seconds: float) -> None:
    """Raise :class:`ConfigError` when the brokers would refuse ``seconds`` as the session
    timeout. Without this a worker starts, its join is refused (InvalidSessionTimeout, one
    log line) and it waits for ever, never ready. If the brokers' configs cannot be read
    (no DescribeConfigs permission), the start goes on with a warning."""
    admin = admin_client(bootstrap)
    try:
        brokers = [str(b["broker_id"]) for b in admin.describe_cluster()["brokers"]]
        configs = resource_configs(
            admin, [ConfigResource(ConfigResourceType.BROKER, b) for b in brokers]
        )
    except KafkaError as err:
        log.warning("could not read the brokers' session timeout bounds: %s", err)
        return
    finally:
        admin.close()
    problem = session_timeout_problem(seconds, configs)
    if problem:
        raise ConfigError(problem)
