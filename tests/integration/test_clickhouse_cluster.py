"""ClickHouse cluster mode on two real 18.16 servers and a ZooKeeper (deploy/local/cluster.sh:
one shard, two replicas): `siyu migrate` creates the schema ON CLUSTER, a worker (on the dev
Kafka) streams a scenario into the Distributed tables, and every table, view and cookbook
query equals the batch oracle: with the sink's first replica stopped, a worker starts,
writes and is read through the other one; a replica stopped under a running sink in the
middle of a step is failed over; and a stopped replica catches up when it returns."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from pipeline.contract.events import RejectReason
from pipeline.sink.clickhouse import client_from_url
from pipeline.sink.rows import SINK_TABLES
from tests.integration import cluster
from tests.integration.cluster import ClusterEnv
from tests.integration.pipeline_env import running_worker, wait_for
from tests.integration.test_topology import assert_equals_oracle, send, send_paced
from tests.oracle import OracleResult, recompute
from tests.scenario import Event, Scenario
from tests.views_oracle import (
    REFERRALS_NET_SQL,
    VIEW_COLUMNS,
    cookbook,
    expected_cookbook,
    expected_views,
    rows,
    view_sql,
)

NODES = ("zookeeper", "clickhouse1", "clickhouse2")
BAD_INPUTS = [(b"{not json", RejectReason.INVALID_JSON), (b"[1]", RejectReason.NOT_AN_OBJECT)]


@pytest.fixture(scope="module")
def ch_ports() -> Iterator[list[int]]:
    with cluster.nodes_up(*NODES):
        yield cluster.clickhouse_ports()


@pytest.fixture
def cenv(kafka_bootstrap: str, ch_ports: list[int]) -> Iterator[ClusterEnv]:
    first, *others = ch_ports
    env = ClusterEnv.make(kafka_bootstrap, first)
    alt = ",".join(f"127.0.0.1:{port}" for port in others)
    env = env.with_settings(
        SIYU_CLICKHOUSE_URL=f"clickhouse://default:@127.0.0.1:{first}/{env.database}"
        f"?alt_hosts={alt}",
        SIYU_CLICKHOUSE_CLUSTER=cluster.cluster_name(),
    )
    done = env.siyu("migrate")
    assert done.returncode == 0, done.stderr
    yield env
    ch = client_from_url(f"clickhouse://default:@127.0.0.1:{first}/default")
    ch.execute(f"DROP DATABASE IF EXISTS {env.database} ON CLUSTER {cluster.cluster_name()}")
    ch.disconnect()
    shutil.rmtree(env.settings().data_dir, ignore_errors=True)


def node_query(port: int, database: str, sql: str) -> list[tuple[Any, ...]]:
    client = client_from_url(f"clickhouse://default:@127.0.0.1:{port}/{database}")
    try:
        return list(client.execute(sql))
    finally:
        client.disconnect()


def replica_rows(port: int, database: str) -> dict[str, list[str]]:
    """Every sink table's rows as one replica holds them (its local table, merged)."""
    return {
        table: sorted(
            repr(r) for r in node_query(port, database, f"SELECT * FROM {table}_local FINAL")
        )
        for table in SINK_TABLES
    }


def replicas_agree(ports: list[int], database: str) -> bool:
    held = [replica_rows(port, database) for port in ports]
    return bool(held[0]["events"]) and all(h == held[0] for h in held[1:])


def read_views(port: int, database: str) -> dict[str, set[tuple[Any, ...]]]:
    got = {view: set(rows(node_query(port, database, view_sql(view)))) for view in VIEW_COLUMNS}
    got["referrals_net"] = set(rows(node_query(port, database, REFERRALS_NET_SQL)))
    return got


def assert_views_and_cookbook(
    port: int, database: str, events: list[Event], oracle: OracleResult
) -> None:
    expected = expected_views(events, oracle)
    assert expected["kocs"] and expected["referrals_net"], "the scenario exercises little"
    got = read_views(port, database)
    for view, want in expected.items():
        assert got[view] == want, (
            f"{view} on :{port}: {len(want - got[view])} missing, {len(got[view] - want)} extra"
        )
    reasons = Counter(str(reason) for _, reason in BAD_INPUTS)
    answers = expected_cookbook(events, oracle, reasons)
    for name, sql in cookbook().items():
        found = rows(node_query(port, database, sql))
        if name == "dead_letters_by_reason":
            found = [r[:2] for r in found]
        assert found and found == answers[name], f"cookbook {name} on :{port}"


def distinct(events: list[Event]) -> list[Event]:
    """Each event once (the first sent), as the oracle counts them."""
    return list({(e.brand_id, e.event_id): e for e in reversed(events)}.values())


def send_bad_inputs(env: ClusterEnv) -> None:
    producer = KafkaProducer(bootstrap_servers=env.kafka_bootstrap, acks="all")
    for raw, _ in BAD_INPUTS:
        producer.send(env.settings().topic_events, raw).get(timeout=30)
    producer.close()


def test_cluster_schema_and_a_replica_outage(
    cenv: ClusterEnv, ch_ports: list[int], small_scenario: Scenario, tmp_path: Path
) -> None:
    db = cenv.database
    # The schema is on both replicas, public names are Distributed, and migrate is idempotent.
    for port in ch_ports:
        engines = dict(
            node_query(port, db, f"SELECT name, engine FROM system.tables WHERE database = '{db}'")
        )
        for table in SINK_TABLES:
            assert engines[table] == "Distributed"
            assert engines[f"{table}_local"].startswith("Replicated")
    again = cenv.siyu("migrate")
    assert again.returncode == 0 and "schema is up to date" in again.stdout, again.stderr

    arrival = small_scenario.arrival
    a, b = len(arrival) * 2 // 5, len(arrival) * 4 // 5
    second = ch_ports[1]
    with running_worker(cenv, tmp_path / "worker1.log"):
        send_bad_inputs(cenv)
        send_paced(cenv, arrival[:a])
    # The worker is stopped, so nothing reaches clickhouse1 after the replicas agree (its
    # timers write rows even without input): a row clickhouse2 had not fetched yet would be
    # missing there, rightly, until clickhouse1 returns.
    wait_for(lambda: replicas_agree(ch_ports, db), 120, "the replicas to agree", interval=1)

    # 1. The sink's URL names clickhouse1 first: with it stopped, a worker starts, writes and
    # is read through clickhouse2 (?alt_hosts), and clickhouse2 alone holds the whole result.
    so_far = recompute(arrival[:b])
    with (
        cluster.node_stopped("clickhouse1"),
        running_worker(cenv, tmp_path / "worker2.log"),
    ):
        send_paced(cenv, arrival[a:b])
        assert_equals_oracle(cenv, so_far)
        assert_views_and_cookbook(second, db, distinct(arrival[:b]), so_far)
    # clickhouse1 is back and fetches what was written without it.
    wait_for(lambda: replicas_agree(ch_ports, db), 120, "clickhouse1 to catch up", interval=1)

    # 2. A replica dies under a running sink, in the middle of a step: the sink reconnects to
    # the other one and goes on; after the replica returns, both hold the whole result.
    expected = recompute(arrival)
    with running_worker(cenv, tmp_path / "worker3.log"):
        send(cenv, arrival[b : b + 150])
        with cluster.node_stopped("clickhouse1"):
            send_paced(cenv, arrival[b + 150 :])
    wait_for(lambda: replicas_agree(ch_ports, db), 120, "clickhouse1 to catch up", interval=1)
    for port in ch_ports:
        only = f"clickhouse://default:@127.0.0.1:{port}/{db}"
        assert_equals_oracle(cenv.with_settings(SIYU_CLICKHOUSE_URL=only), expected)
        assert_views_and_cookbook(port, db, small_scenario.events, expected)


def test_two_migrations_at_once_through_different_nodes(
    kafka_bootstrap: str, ch_ports: list[int]
) -> None:
    """Two `siyu migrate` started together, one per replica, both succeed, and a third finds
    nothing to do: every rewritten statement is idempotent and the DDL queue orders them."""
    env = ClusterEnv.make(
        kafka_bootstrap, ch_ports[0], SIYU_CLICKHOUSE_CLUSTER=cluster.cluster_name()
    )
    db = env.database
    runs = [
        env.with_settings(SIYU_CLICKHOUSE_URL=f"clickhouse://default:@127.0.0.1:{port}/{db}")
        for port in ch_ports
    ]
    try:
        with ThreadPoolExecutor(len(runs)) as pool:
            done = list(pool.map(lambda e: e.siyu("migrate"), runs))
        for proc in done:
            assert proc.returncode == 0, proc.stderr
            assert "applied" in proc.stdout
        third = runs[-1].siyu("migrate")
        assert third.returncode == 0 and "schema is up to date" in third.stdout, third.stderr
        for port in ch_ports:
            names = {r[0] for r in node_query(port, db, "SHOW TABLES")}
            assert {*SINK_TABLES, *(f"{t}_local" for t in SINK_TABLES), *VIEW_COLUMNS} <= names
    finally:
        node_query(
            ch_ports[0],
            "default",
            f"DROP DATABASE IF EXISTS {db} ON CLUSTER {cluster.cluster_name()}",
        )
