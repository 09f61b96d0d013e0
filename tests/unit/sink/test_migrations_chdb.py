"""The migrations and the sink's SQL run on a current ClickHouse engine (chdb)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from pipeline.contract.events import ClickEvent
from pipeline.sink.clickhouse import ServerVersion
from pipeline.sink.migrations import feature_types, load_migrations, migrate
from pipeline.sink.rows import DEAD_LETTERS, EVENTS, event_row
from tests.chdb_client import ChdbClient


@pytest.fixture(scope="module")
def chdb() -> Iterator[ChdbClient]:
    client = ChdbClient()
    yield client
    client.disconnect()


def test_migrations_apply_once_and_record_themselves(chdb: ChdbClient) -> None:
    version = ServerVersion.parse(str(chdb.execute("SELECT version()")[0][0]))
    assert version.at_least(23)
    logs: list[str] = []
    applied = migrate(chdb, "siyu_chdb", version, log=logs.append)  # type: ignore[arg-type]
    assert applied == [m.version for m in load_migrations()]
    assert "lc_string -> LowCardinality(String)" in logs[0]
    assert migrate(chdb, "siyu_chdb", version, log=logs.append) == []  # type: ignore[arg-type]
    for spec in (EVENTS, DEAD_LETTERS):
        cols = [r[0] for r in chdb.execute(f"DESCRIBE TABLE siyu_chdb.{spec.name}")]
        assert set(spec.columns) <= set(cols)


def test_replayed_rows_count_once_in_the_unique_views(chdb: ChdbClient) -> None:
    version = ServerVersion.parse(str(chdb.execute("SELECT version()")[0][0]))
    migrate(chdb, "siyu_chdb2", version, log=lambda _: None)  # type: ignore[arg-type]
    event = ClickEvent(
        type="click",
        event_id="e1",
        schema_version=1,
        brand_id="b",
        user_id="u",
        occurred_at=dt.datetime.fromtimestamp(1_795_399_200, dt.UTC),
        channel="app",
    )
    row = event_row(event, 0, 7, 1_795_399_300)
    for _ in range(3):
        chdb.execute(f"INSERT INTO siyu_chdb2.events ({', '.join(EVENTS.columns)}) VALUES", [row])
    assert chdb.execute("SELECT count() FROM siyu_chdb2.events_unique")[0][0] == 1
    assert (
        chdb.execute(
            "SELECT count() FROM siyu_chdb2.events_unique WHERE brand_id = %(b)s", {"b": "b"}
        )[0][0]
        == 1
    )


def test_old_servers_get_plain_strings() -> None:
    assert feature_types(ServerVersion.parse("18.16.1"))["lc_string"] == "String"
    assert feature_types(ServerVersion.parse("24.3.1"))["lc_string"] == "LowCardinality(String)"
