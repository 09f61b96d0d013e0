"""The Grafana alert queries and dashboard SQL on the real ClickHouse 18.16 server, with
generated data: each alert fires for its synthetic problem and not for steady or low
traffic, and every dashboard query runs and finds data. (Current ClickHouse: the same in
tests/unit/test_grafana_provisioning.py, on chdb.)"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pipeline.sink.clickhouse import client_from_url, server_version
from pipeline.sink.migrations import migrate
from tests import grafana
from tests.grafana import ALERT_CASES, DASHBOARD_VARIABLES, AlertCase, Runner
from tests.scenario import START, generate

MakeDatabase = Callable[[grafana.Tables], Runner]


@pytest.fixture(scope="module")
def make_database(clickhouse_port: int) -> Iterator[MakeDatabase]:
    """``make_database(tables)``: a migrated database holding ``tables``, dropped at the end;
    returns a runner of SQL in it."""
    url = f"clickhouse://default:@127.0.0.1:{clickhouse_port}/default"
    admin = client_from_url(url, database="default")
    version = server_version(admin)
    created: list[str] = []
    clients: list[Any] = []

    def make(tables: grafana.Tables) -> Runner:
        name = f"siyu_g{uuid.uuid4().hex[:10]}"
        created.append(name)
        migrate(admin, name, version, log=lambda _: None)
        tables.insert(admin, name)
        client = client_from_url(url, database=name)
        clients.append(client)

        def run(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
            rows, columns = client.execute(sql, with_column_types=True)
            return [c[0] for c in columns], [tuple(r) for r in rows]

        return run

    yield make
    for client in clients:
        client.disconnect()
    for name in created:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
    admin.disconnect()


@pytest.mark.parametrize("case", ALERT_CASES, ids=lambda c: c.uid)
def test_alert_query_fires_for_the_synthetic_problem_only(
    make_database: MakeDatabase, case: AlertCase
) -> None:
    grafana.check_alert_case(case, make_database(case.tables()))


@pytest.fixture(scope="module")
def dashboard_runner(make_database: MakeDatabase) -> Runner:
    return make_database(grafana.scenario_tables(generate(seed=606, n_events=1200)))


@pytest.mark.parametrize(
    "query", grafana.dashboard_queries(), ids=lambda q: f"{q[0]}:{q[1]}".replace(" ", "_")
)
def test_dashboard_query_runs_and_finds_data(
    dashboard_runner: Runner, query: tuple[str, str, str]
) -> None:
    _, _, raw = query
    start = int(START.timestamp())
    sql = grafana.expand(
        raw, start=start, end=start + 30 * 86400, interval_s=3600, variables=DASHBOARD_VARIABLES
    )
    names, rows = dashboard_runner(sql)
    assert names and rows, sql
