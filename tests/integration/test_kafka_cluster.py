"""siyu on a three-broker KRaft Kafka (deploy/local/cluster.sh) with replication factor 3 and
min.insync.replicas 2: a broker stopped in the middle of a stream (the leader of a partition
the events are sent to, while a step is being processed) loses nothing, doubles nothing, and
the result equals the batch oracle; the broker catches up when it returns."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from pipeline.contract.events import encode_envelope
from pipeline.kafka.quiescence import Quiescence
from pipeline.kafka.topics import topic_configs, topic_specs
from pipeline.sink.clickhouse import client_from_url
from tests.integration import cluster
from tests.integration.cluster import ClusterEnv
from tests.integration.pipeline_env import running_worker, wait_for
from tests.integration.test_topology import assert_equals_oracle, in_steps
from tests.oracle import recompute
from tests.scenario import Event, Scenario

BROKERS = ("kafka1", "kafka2", "kafka3")


@pytest.fixture(scope="module")
def cluster_bootstrap() -> Iterator[str]:
    with cluster.nodes_up(*BROKERS):
        yield cluster.kafka_bootstrap()


@pytest.fixture
def kenv(cluster_bootstrap: str, clickhouse_port: int) -> Iterator[ClusterEnv]:
    env = ClusterEnv.make(cluster_bootstrap, clickhouse_port, SIYU_TOPIC_REPLICATION="3")
    done = env.siyu("migrate")
    assert done.returncode == 0, done.stderr
    yield env
    ch = client_from_url(env.settings().clickhouse_url, database="default")
    ch.execute(f"DROP DATABASE IF EXISTS {env.database}")
    ch.disconnect()
    shutil.rmtree(env.settings().data_dir, ignore_errors=True)
    admin = KafkaAdminClient(bootstrap_servers=cluster_bootstrap)
    try:
        mine = [t for t in admin.list_topics() if env.name in t]
        admin.delete_topics(mine)
    finally:
        admin.close()


def send_checked(env: ClusterEnv, events: list[Event], per_message: int = 40) -> None:
    """Send envelopes like a brand app with acks=all, failing loudly if any is not stored:
    a lost send must not be mistaken for a loss in the pipeline."""
    s = env.settings()
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=5)
    try:
        futures = [
            producer.send(s.topic_events, encode_envelope(events[i : i + per_message]))
            for i in range(0, len(events), per_message)
        ]
        for future in futures:
            future.get(timeout=120)
    finally:
        producer.close()


def under_replicated(env: ClusterEnv) -> list[str]:
    """Partitions of siyu's topics with fewer than three in-sync replicas."""
    names = [t.name for t in topic_specs(env.settings())]
    admin = KafkaAdminClient(bootstrap_servers=env.kafka_bootstrap)
    try:
        return [
            f"{t['name']}/{p['partition_index']}: isr {p['isr_nodes']}"
            for t in admin.describe_topics(names)
            for p in t["partitions"]
            if len(p["isr_nodes"]) < 3
        ]
    finally:
        admin.close()


def test_a_broker_stopped_mid_stream_changes_no_result(
    kenv: ClusterEnv, small_scenario: Scenario, tmp_path: Path
) -> None:
    expected = recompute(small_scenario.arrival)
    steps = in_steps(small_scenario.arrival)
    middle = len(steps) // 2
    s = kenv.settings()

    def quiet() -> None:
        # Quiescence.wait weathers a look that fails while a broker is away (it reconnects);
        # one failed look must not end the test while the workers themselves carry on.
        with Quiescence(s) as q:
            q.wait(120, interval_s=0.3)

    with running_worker(kenv, tmp_path / "worker.log"):
        admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        try:
            [events_topic] = admin.describe_topics([s.topic_events])
            assert topic_configs(admin, s.topic_events)["min.insync.replicas"] == "2"
        finally:
            admin.close()
        assert all(len(p["replica_nodes"]) == 3 for p in events_topic["partitions"])
        assert not under_replicated(kenv)
        victim = f"kafka{events_topic['partitions'][0]['leader_id']}"

        for step in steps[:middle]:
            send_checked(kenv, step)
            quiet()
        send_checked(kenv, steps[middle])
        # While that step is being ingested, joined, attributed and sunk.
        with cluster.node_stopped(victim):
            quiet()
            for step in steps[middle + 1 :]:
                send_checked(kenv, step)
                quiet()
            assert under_replicated(kenv), f"{victim} was stopped, yet every ISR is full"
            assert_equals_oracle(kenv, expected)
        wait_for(lambda: not under_replicated(kenv), 120, f"{victim} to catch up", interval=1)
    assert_equals_oracle(kenv, expected)
