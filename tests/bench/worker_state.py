"""State size of a real worker per 100,000 users, beside the pure core's figure.

One worker (once per store) runs generated events with a known number of users
(:mod:`tests.bench.backlog`) through the full topology, in two phases sent at a steady rate
through the SDK: the first half, until the worker is quiet, then as many events from users
it has not seen (other brands), until it is quiet again. Then, per 100,000 users (distinct
brand + user pairs in the events):

- **resident memory per user**: the worker's RSS after the second phase minus its RSS
  after the first, over the second phase's users. The topology keeps every owned key's
  parsed state between batches (``StateCache``), whatever the store, so this is the
  memory a worker needs for its users; the first phase grows buffers and pools to their
  working size, so their fixed cost is not charged to the users;
- **RocksDB files**: SST and write-ahead-log bytes in the worker's data directory after it
  stopped (with ``--state-store memory`` there are none);
- **changelogs, live**: key + value bytes of the latest record of every key in the tables'
  changelog topics, read back from Kafka: the bytes a memory store holds (before Python's
  object overhead) and what a compacted changelog converges to;
- **changelogs, as written**: the broker's log size of those topics right after the run,
  every version of every key (compaction has not run yet): what a restore would read now.

:mod:`tests.bench.state_size` gives the same per-user figures for the pure domain core (no
Kafka, no Faust); both are reported, labelled, by ``python -m tests.bench``.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from pipeline.contract.events import AnyEvent
from pipeline.sink.clickhouse import client_from_url
from tests.bench.backlog import emitter, paced, scenario_events, users_of
from tests.bench.namespace import drained, namespace, proc_stats, worker
from tests.bench.throughput import SINK_FLUSH_SECONDS
from tests.integration.pipeline_env import PipelineEnv, wait_for

MIB = 2**20
#: Brands of the second phase: their (brand, user) pairs are new to the worker.
_LATER_BRANDS = ("coral", "delta")


def _per_100k(n_bytes: float, users: int) -> float:
    return n_bytes * 100_000 / users / MIB


def _table_of(changelog: str, app_id: str) -> str:
    """``siyu-x-state-user-changelog`` -> ``state-user``."""
    return changelog.removeprefix(app_id + "-").removesuffix("-changelog")


def changelog_topics(penv: PipelineEnv) -> list[str]:
    s = penv.settings()
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, client_id="siyu-bench")
    try:
        return sorted(
            t for t in admin.list_topics() if t.startswith(s.app_id) and t.endswith("-changelog")
        )
    finally:
        admin.close()


def log_bytes(penv: PipelineEnv, topics: list[str]) -> int:
    """Bytes of the topics' logs on the broker(s), every partition (describe log dirs)."""
    admin = KafkaAdminClient(bootstrap_servers=penv.settings().kafka_bootstrap)
    try:
        answer = admin.describe_log_dirs(topics)
    finally:
        admin.close()
    return sum(
        p["partition_size"]
        for broker in answer
        for log_dir in broker["log_dirs"]
        for topic in log_dir["topics"]
        if topic["name"] in topics
        for p in topic["partitions"]
    )


def live_bytes(penv: PipelineEnv, topics: list[str]) -> dict[str, dict[str, int]]:
    """Per topic: records, live keys and key + value bytes of the latest record per key."""
    s = penv.settings()
    consumer = KafkaConsumer(bootstrap_servers=s.kafka_bootstrap, enable_auto_commit=False)
    out: dict[str, dict[str, int]] = {}
    try:
        for topic in topics:
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ends = consumer.end_offsets(tps)
            latest: dict[bytes, int] = {}
            records = 0
            deadline = time.monotonic() + 120
            while any(consumer.position(tp) < ends[tp] for tp in tps):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading changelog {topic} took over 120 s")
                for batch in consumer.poll(timeout_ms=1000, max_records=10_000).values():
                    for msg in batch:
                        records += 1
                        key = msg.key or b""
                        if msg.value is None:
                            latest.pop(key, None)  # a tombstone: the key is gone
                        else:
                            latest[key] = len(key) + len(msg.value)
            out[topic] = {"records": records, "keys": len(latest), "bytes": sum(latest.values())}
    finally:
        consumer.close()
    return out


def rocksdb_bytes(data_dir: Path) -> int:
    """SST and write-ahead-log bytes under ``data_dir`` (not RocksDB's LOG/OPTIONS files)."""
    return sum(
        f.stat().st_size
        for f in data_dir.rglob("*")
        if f.is_file() and f.suffix in {".sst", ".log"}
    )


def _through(penv: PipelineEnv, expected: int) -> None:
    """Wait until ``expected`` events are visible and the whole topology is quiet."""
    client = client_from_url(penv.settings().clickhouse_url)
    try:
        wait_for(
            lambda: client.execute("SELECT count() FROM events_unique")[0][0] >= expected,
            900,
            f"{expected} events visible",
            interval=0.5,
        )
    finally:
        client.disconnect()
    wait_for(lambda: drained(penv), 900, "the pipeline to go quiet", interval=0.5)


def two_phases(n_events: int, n_users: int) -> tuple[list[AnyEvent], list[AnyEvent]]:
    """Two halves with disjoint users (other brands), the second later in event time."""
    first = scenario_events(n_events // 2, n_users, seed=9)
    second = scenario_events(n_events - n_events // 2, n_users, seed=10, brands=_LATER_BRANDS)
    shift = first[-1].occurred_at - second[0].occurred_at + dt.timedelta(seconds=1)
    return first, [e.model_copy(update={"occurred_at": e.occurred_at + shift}) for e in second]


def worker_state(
    kafka: str,
    clickhouse_port: int,
    n_events: int,
    n_users: int,
    store: str = "rocksdb",
    rate: float = 500.0,
    cache_keys: int | None = None,
) -> dict[str, Any]:
    """Send two halves of traffic through one worker at ``rate`` events/s and measure its
    state; figures per 100k users.

    The memory per user is the slope between the two phases: RSS after the second minus
    RSS after the first, over the second phase's (new) users. The first phase brings the
    worker's buffers, pools and caches to their working size, so that fixed part cancels
    out (RSS growth from "ready" would charge it to a few thousand users). Both phases
    arrive paced, as live traffic, not as a backlog: a backlog is read in big batches whose
    garbage grows the heap, and the second phase's states would then fill that free space
    without growing RSS, hiding their size. ``cache_keys`` bounds the worker's cache of
    parsed states (``SIYU_STATE_CACHE_KEYS``; None: the default, above these user counts)."""
    first, second = two_phases(n_events, n_users)
    users_first, users_second = users_of(first), users_of(second)
    users = users_first + users_second
    with namespace(kafka, clickhouse_port) as penv:
        env = {"SIYU_STORE": store, "SIYU_SINK_FLUSH_SECONDS": SINK_FLUSH_SECONDS}
        if cache_keys is not None:
            env["SIYU_STATE_CACHE_KEYS"] = str(cache_keys)
        with worker(penv, "state", **env) as w, emitter(penv) as sdk:
            _, rss_ready, _ = proc_stats(w.proc.pid)
            paced(sdk, first, rate)
            _through(penv, len(first))
            _, rss_first, _ = proc_stats(w.proc.pid)
            paced(sdk, second, rate)
            _through(penv, len(first) + len(second))
            _, rss_end, peak = proc_stats(w.proc.pid)
        topics = changelog_topics(penv)
        written = log_bytes(penv, topics)
        live = live_bytes(penv, topics)
        on_disk = rocksdb_bytes(Path(penv.settings().data_dir))
    live_total = sum(t["bytes"] for t in live.values())
    return {
        "store": store,
        "cache_keys": cache_keys,
        "events": len(first) + len(second),
        "users": users,
        "users_second_phase": users_second,
        # Live keys per table, exact (the worker's siyu_state_keys gauge is RocksDB's
        # estimate with that store, which counts overwritten versions too).
        "keys": {_table_of(t, penv.settings().app_id): v["keys"] for t, v in live.items()},
        "rss_ready_mib": rss_ready / MIB,
        "rss_after_first_mib": rss_first / MIB,
        "rss_end_mib": rss_end / MIB,
        "peak_rss_mib": peak / MIB,
        "rss_growth_mib_per_100k": _per_100k(rss_end - rss_first, users_second),
        "rocksdb_bytes": on_disk,
        "rocksdb_mib_per_100k": _per_100k(on_disk, users),
        "changelogs": live,
        "changelog_live_mib_per_100k": _per_100k(live_total, users),
        "changelog_log_bytes": written,
        "changelog_log_mib_per_100k": _per_100k(written, users),
    }


def pure_state(n_events: int) -> dict[str, Any]:
    """tests/bench/state_size.py's measurement of the pure domain core, in a fresh process."""
    child = [sys.executable, "-m", "tests.bench.state_size", "--one", str(n_events)]
    done = subprocess.run(child, check=True, capture_output=True, text=True)
    m = json.loads(done.stdout)
    users = m["users"]
    return {
        "events": m["events"],
        "users": users,
        "keys": m["keys"],
        "state_mib_per_100k": _per_100k(sum(m["state_bytes"].values()), users),
        "rss_mib_per_100k": _per_100k(m["rss_growth_bytes"], users),
    }
