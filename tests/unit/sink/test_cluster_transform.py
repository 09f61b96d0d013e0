"""Cluster mode's rewrite of the migrations (pipeline/sink/cluster.py), checked statement by
statement and parsed by a current ClickHouse (chdb); the single-server path stays as it was.
The rewritten DDL runs on real 18.16 servers in tests/integration/test_clickhouse_cluster.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.errors import ConfigError, MigrationError
from pipeline.settings import Settings
from pipeline.sink import cluster as cluster_mod
from pipeline.sink.clickhouse import ServerVersion, client_from_url
from pipeline.sink.cluster import (
    ClusterLayout,
    ClusterTransform,
    cluster_layout,
    insert_settings,
    strip_column_comments,
)
from pipeline.sink.migrations import MIGRATIONS_TABLE, feature_types, load_migrations, migrate
from tests.chdb_client import ChdbClient

LAYOUT = ClusterLayout("c1")


@pytest.fixture(scope="module")
def chdb() -> Iterator[ChdbClient]:
    client = ChdbClient()
    yield client
    client.disconnect()


def shipped_statements(version: str = "18.16.1") -> list[str]:
    subs = {"db": "siyu", **feature_types(ServerVersion.parse(version))}
    return [s for mig in load_migrations() for s in mig.statements(subs)]


def rewrite_all(statements: list[str]) -> tuple[ClusterTransform, list[tuple[str, list[str]]]]:
    transform = ClusterTransform(LAYOUT)
    return transform, [(s, transform.statements(s)) for s in statements]


def test_each_merge_tree_table_becomes_replicated_local_behind_distributed() -> None:
    transform, pairs = rewrite_all(shipped_statements())
    tables = [
        m.group(1)
        for s, _ in pairs
        if (m := re.match(r"CREATE TABLE IF NOT EXISTS siyu\.(\w+)", s))
    ]
    assert {"events", "dead_letters", "user_loyalty", "purchase_credits"} <= set(tables)
    assert transform.sharded == set(tables)
    for original, out in pairs:
        if not original.startswith("CREATE TABLE"):
            continue
        local, dist = out
        name = re.match(r"CREATE TABLE IF NOT EXISTS siyu\.(\w+)", original).group(1)  # type: ignore[union-attr]
        engine = re.search(r"ENGINE = (\w+)\(([^)]*)\)", original)
        kind, args = (engine.group(1), engine.group(2)) if engine else ("", "")
        expected_args = ", ".join(
            a for a in (f"'/clickhouse/tables/{{shard}}/siyu/{name}'", "'{replica}'", args) if a
        )
        assert local.startswith(f"CREATE TABLE IF NOT EXISTS siyu.{name}_local ON CLUSTER c1 (")
        assert f"ENGINE = Replicated{kind}({expected_args})" in local
        assert "COMMENT" not in local
        # Everything after the engine (partitioning, ordering) is kept as written.
        assert local.endswith(original[original.index(engine.group(0)) + len(engine.group(0)) :])  # type: ignore[union-attr]
        key = ", ".join(cluster_mod.SHARDING_KEYS[name])
        assert dist.startswith(f"CREATE TABLE IF NOT EXISTS siyu.{name} ON CLUSTER c1 (")
        assert dist.endswith(f"ENGINE = Distributed(c1, siyu, {name}_local, cityHash64({key}))")
        # The public table keeps the columns with their comments.
        assert (
            dist[dist.index("(") : dist.rindex("\nENGINE")]
            == original[original.index("(") : original.index("\nENGINE")]
        )


def test_views_only_gain_on_cluster_and_still_read_the_public_names() -> None:
    _, pairs = rewrite_all(shipped_statements())
    views = [(s, out) for s, out in pairs if s.startswith("CREATE VIEW")]
    assert len(views) >= 2
    for original, [out] in views:
        head = re.match(r"CREATE VIEW IF NOT EXISTS siyu\.\w+", original).group(0)  # type: ignore[union-attr]
        assert out == f"{head} ON CLUSTER c1{original[len(head) :]}"
        assert "_local" not in out


def test_every_rewritten_statement_parses_on_current_clickhouse(chdb: ChdbClient) -> None:
    version = str(chdb.execute("SELECT version()")[0][0])
    _, pairs = rewrite_all(shipped_statements(version))
    statements = [s for _, out in pairs for s in out]
    for stmt in statements:
        formatted = chdb.execute("SELECT formatQuery(%(q)s)", {"q": stmt})[0][0]
        assert "ON CLUSTER c1" in formatted, stmt[:80]


def test_every_table_is_sharded_within_its_dedup_key() -> None:
    """The rule that keeps FINAL and argMax right across shards, for every shipped table."""
    transform, _ = rewrite_all(shipped_statements())
    for name in transform.sharded:
        assert name in cluster_mod.SHARDING_KEYS, f"{name} has no deliberate sharding key"


def test_a_sharding_key_outside_the_dedup_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cluster_mod.SHARDING_KEYS, "t", ("brand_id", "user_id"))
    stmt = (
        "CREATE TABLE siyu.t (brand_id String, id String, user_id String) "
        "ENGINE = ReplacingMergeTree() ORDER BY (brand_id, id)"
    )
    with pytest.raises(MigrationError, match=r"uses \['user_id'\], outside its dedup key"):
        ClusterTransform(LAYOUT).statements(stmt)
    monkeypatch.setitem(cluster_mod.DETERMINED_BY_KEY, "t", frozenset({"user_id"}))
    assert "cityHash64(brand_id, user_id)" in ClusterTransform(LAYOUT).statements(stmt)[1]


def test_a_new_table_without_a_key_is_sharded_by_its_whole_order_by() -> None:
    out = ClusterTransform(LAYOUT).statements(
        "CREATE TABLE IF NOT EXISTS siyu.new_table (a String, b UInt32, c String)\n"
        "ENGINE = ReplacingMergeTree\nORDER BY (a, b)\nSETTINGS index_granularity = 8192"
    )
    assert out[0].endswith(
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/siyu/new_table', "
        "'{replica}')\nORDER BY (a, b)\nSETTINGS index_granularity = 8192"
    )
    assert out[1].endswith("Distributed(c1, siyu, new_table_local, cityHash64(a, b))")
    single = ClusterTransform(LAYOUT).statements(
        "CREATE TABLE siyu.x (a String) ENGINE = MergeTree ORDER BY a SETTINGS index_granularity=1"
    )
    assert single[1].endswith("cityHash64(a))")
    with pytest.raises(MigrationError, match="ORDER BY key"):
        ClusterTransform(LAYOUT).statements(
            "CREATE TABLE siyu.y (a String) ENGINE = MergeTree ORDER BY lower(a)"
        )


def test_other_engines_run_on_every_node_unchanged() -> None:
    [out] = ClusterTransform(LAYOUT).statements(
        "CREATE TABLE IF NOT EXISTS siyu.m (a String COMMENT 'kept') ENGINE = Memory"
    )
    assert (
        out == "CREATE TABLE IF NOT EXISTS siyu.m ON CLUSTER c1 (a String COMMENT 'kept') "
        "ENGINE = Memory"
    )


def test_later_drop_and_alter_reach_the_local_table_too() -> None:
    t = ClusterTransform(LAYOUT)
    t.statements("CREATE TABLE siyu.t (a String) ENGINE = MergeTree ORDER BY a")
    assert t.statements("ALTER TABLE siyu.t ADD COLUMN b String COMMENT 'new', DROP COLUMN c") == [
        "ALTER TABLE siyu.t_local ON CLUSTER c1 ADD COLUMN b String, DROP COLUMN c",
        "ALTER TABLE siyu.t ON CLUSTER c1 ADD COLUMN b String COMMENT 'new', DROP COLUMN c",
    ]
    with pytest.raises(MigrationError, match="ADD/DROP/MODIFY COLUMN"):
        t.statements("ALTER TABLE siyu.t DELETE WHERE a = 'x'")
    assert t.statements("ALTER TABLE siyu.other UPDATE a = 'y' WHERE 1") == [
        "ALTER TABLE siyu.other ON CLUSTER c1 UPDATE a = 'y' WHERE 1"
    ]
    assert t.statements("DROP TABLE IF EXISTS siyu.t") == [
        "DROP TABLE IF EXISTS siyu.t ON CLUSTER c1",
        "DROP TABLE IF EXISTS siyu.t_local ON CLUSTER c1",
    ]
    assert "t" not in t.sharded
    assert t.statements("DROP VIEW siyu.v") == ["DROP VIEW siyu.v ON CLUSTER c1"]


def test_what_cannot_be_rewritten_safely_is_refused_with_a_reason() -> None:
    t = ClusterTransform(LAYOUT)
    with pytest.raises(MigrationError, match="materialized views"):
        t.statements("CREATE MATERIALIZED VIEW siyu.mv ENGINE = Memory AS SELECT 1")
    with pytest.raises(MigrationError, match="does not know how to run"):
        t.statements("RENAME TABLE siyu.a TO siyu.b")
    with pytest.raises(MigrationError, match="explicit column list"):
        t.statements("CREATE TABLE siyu.c AS siyu.a")
    # INSERT ... SELECT runs once, through the Distributed table.
    assert t.statements("INSERT INTO siyu.a SELECT * FROM siyu.b") == [
        "INSERT INTO siyu.a SELECT * FROM siyu.b"
    ]


def test_comments_are_stripped_but_literals_kept() -> None:
    cols = (
        "(a Enum8('COMMENT ''x''' = 1) COMMENT 'it''s a \\' test', "
        "b String DEFAULT ' COMMENT ''q''' comment 'lower', c Array(String))"
    )
    assert strip_column_comments(cols) == (
        "(a Enum8('COMMENT ''x''' = 1), b String DEFAULT ' COMMENT ''q''', c Array(String))"
    )


def test_layout_checks_its_path_and_name() -> None:
    assert LAYOUT.path("db", "t") == "/clickhouse/tables/{shard}/db/t"
    with pytest.raises(MigrationError, match=r"must contain \{table\}"):
        ClusterLayout("c", "/clickhouse/{shard}/{database}")
    with pytest.raises(MigrationError, match="quotes"):
        ClusterLayout("c", "/x/{database}/{table}'")
    with pytest.raises(ConfigError):
        ClusterLayout("bad-name")


def test_settings_choose_the_mode_and_the_insert_settings() -> None:
    single = Settings(clickhouse_cluster=None)
    assert cluster_layout(single) is None
    assert insert_settings(single) == {}
    clustered = Settings(clickhouse_cluster="siyu_cluster")
    assert cluster_layout(clustered) == ClusterLayout("siyu_cluster")
    assert insert_settings(clustered) == {"insert_distributed_sync": 1}
    quorum = Settings(clickhouse_cluster="siyu_cluster", clickhouse_insert_quorum=2)
    assert insert_settings(quorum) == {"insert_distributed_sync": 1, "insert_quorum": 2}


def test_the_url_may_name_failover_hosts() -> None:
    client = client_from_url("clickhouse://u:p@h1:9001/db?alt_hosts=h2:9002,h3:9003")
    assert list(client.connection.hosts) == [("h1", 9001), ("h2", 9002), ("h3", 9003)]
    with pytest.raises(ConfigError, match="unknown parameter 'secure'"):
        client_from_url("clickhouse://h1:9001/db?secure=1")
    with pytest.raises(ConfigError, match="expected host:port"):
        client_from_url("clickhouse://h1:9001/db?alt_hosts=h2")


class _Recorder:
    """Forwards to chdb and records each statement."""

    def __init__(self, inner: ChdbClient) -> None:
        self.inner = inner
        self.seen: list[str] = []

    def execute(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        self.seen.append(query)
        return self.inner.execute(query, params)


def test_without_a_cluster_migrate_runs_the_files_as_written(chdb: ChdbClient) -> None:
    version = ServerVersion.parse(str(chdb.execute("SELECT version()")[0][0]))
    rec = _Recorder(chdb)
    migrate(rec, "siyu_single", version, log=lambda _: None)  # type: ignore[arg-type]
    ddl = [q for q in rec.seen if not q.startswith(("SELECT", "INSERT"))]
    subs = {"db": "siyu_single", **feature_types(version)}
    expected = [s for mig in load_migrations() for s in mig.statements(subs)]
    assert ddl[0] == "CREATE DATABASE IF NOT EXISTS siyu_single"
    assert ddl[1].startswith(f"CREATE TABLE IF NOT EXISTS siyu_single.{MIGRATIONS_TABLE} ")
    assert ddl[2:] == expected
    assert not any("ON CLUSTER" in q or "Distributed" in q for q in rec.seen)


def test_cluster_mode_on_a_server_without_that_cluster_says_so(chdb: ChdbClient) -> None:
    version = ServerVersion.parse(str(chdb.execute("SELECT version()")[0][0]))
    with pytest.raises(MigrationError, match=r"'c1' .* is not in the server's <remote_servers>"):
        migrate(chdb, "siyu_nocluster", version, cluster=LAYOUT, log=lambda _: None)  # type: ignore[arg-type]


def test_a_single_server_database_is_not_migrated_as_a_cluster_one(
    chdb: ChdbClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = ServerVersion.parse(str(chdb.execute("SELECT version()")[0][0]))
    migrate(chdb, "siyu_mode", version, log=lambda _: None)  # type: ignore[arg-type]
    monkeypatch.setattr("pipeline.sink.migrations.check_cluster", lambda client, layout: None)
    with pytest.raises(MigrationError, match="created for a single server"):
        migrate(chdb, "siyu_mode", version, cluster=LAYOUT, log=lambda _: None)  # type: ignore[arg-type]
