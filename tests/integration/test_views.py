"""The query surface on the real ClickHouse: every view of migration 0004 and every cookbook
query of docs/queries.md equals a recomputation from the events (batch oracle), on the 18.16
server and on current ClickHouse (chdb, holding a copy of the same tables), and a full replay
of every topic from the beginning changes no answer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import OffsetSpec

from pipeline.contract.events import RejectReason
from pipeline.sink.clickhouse import ServerVersion, client_from_url
from pipeline.sink.migrations import migrate
from tests.chdb_client import ChdbClient
from tests.integration.pipeline_env import PipelineEnv, Worker, wait_for
from tests.integration.test_topology import quiescent, send
from tests.oracle import OracleResult, recompute
from tests.scenario import Scenario
from tests.views_oracle import (
    assert_views_match,
    cookbook,
    expected_cookbook,
    expected_views,
    read_views,
    rows,
)

#: Bad inputs sent with the scenario, and the reason each must be dead-lettered for.
BAD_INPUTS = [
    (b"{not json", RejectReason.INVALID_JSON),
    (b"[1, 2]", RejectReason.NOT_AN_OBJECT),
    (b'{"type": "teleport", "schema_version": 1}', RejectReason.UNKNOWN_TYPE),
    (b'{"type": "click", "schema_version": 1, "event_id": "x"}', RejectReason.SCHEMA_VIOLATION),
]
#: Base tables whose rows are copied to chdb (views are recreated there by the migrations).
TABLES = [
    "events",
    "dead_letters",
    "user_loyalty",
    "share_chains",
    "purchase_credits",
    "koc_promotions",
    "referrers",
    "late_events",
]


@dataclass
class Produced:
    penv: PipelineEnv
    oracle: OracleResult
    scenario: Scenario
    log_dir: Path


@pytest.fixture(scope="module")
def produced(
    kafka_bootstrap: str, clickhouse_port: int, scenario: Scenario, tmp_path_factory: Any
) -> Iterator[Produced]:
    """The scenario (and a few bad inputs) through one worker into a fresh database."""
    penv = PipelineEnv.fresh(kafka_bootstrap, clickhouse_port)
    done = penv.siyu("migrate")
    assert done.returncode == 0, done.stderr
    log_dir = tmp_path_factory.mktemp("views")
    worker = Worker(penv, log_dir / "worker.log")
    try:
        worker.wait_ready()
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        for raw, _ in BAD_INPUTS:
            producer.send(penv.settings().topic_events, raw)
        producer.flush()
        producer.close()
        # All at once, as a backlog: the views must not depend on live pacing.
        send(penv, scenario.arrival, per_message=200)
        wait_for(lambda: quiescent(penv), 300, "the scenario to be processed", interval=0.5)
    finally:
        worker.stop()
    yield Produced(penv, recompute(scenario.arrival), scenario, log_dir)
    penv.cleanup()


def _answers(client: Any) -> dict[str, list[tuple[Any, ...]]]:
    return {name: rows(client.execute(sql)) for name, sql in cookbook().items()}


def _dead_letter_reasons() -> Counter[str]:
    return Counter(str(reason) for _, reason in BAD_INPUTS)


def _client(produced: Produced) -> Any:
    return client_from_url(produced.penv.settings().clickhouse_url)


def test_every_view_equals_the_oracle(produced: Produced) -> None:
    expected = expected_views(produced.scenario.events, produced.oracle)
    # The scenario exercises what the views summarise, or equality would prove little.
    assert expected["kocs"] and expected["referrals_net"] and expected["kol_revenue_minute"]
    assert any(int(r[5]) > 0 for r in expected["kol_performance_minute"])  # shares in chains
    client = _client(produced)
    try:
        assert_views_match(client, produced.scenario.events, produced.oracle)
    finally:
        client.disconnect()


def test_every_cookbook_query_answers_right_on_18_16(produced: Produced) -> None:
    queries = cookbook()
    expected = expected_cookbook(produced.scenario.events, produced.oracle, _dead_letter_reasons())
    assert set(queries) == set(expected), "a cookbook query without a recomputation, or v.v."
    client = _client(produced)
    try:
        got = _answers(client)
    finally:
        client.disconnect()
    got["dead_letters_by_reason"] = [r[:2] for r in got["dead_letters_by_reason"]]
    for name in queries:
        assert got[name], f"{name} returned nothing"
        assert got[name] == expected[name], name


def test_views_and_cookbook_give_the_same_answers_on_current_clickhouse(
    produced: Produced,
) -> None:
    """The migrations create the same views on a current engine, and the same rows give the
    same answers there."""
    source = _client(produced)
    chdb = ChdbClient()
    try:
        version = ServerVersion.parse(str(chdb.execute("SELECT version()")[0][0]))
        migrate(chdb, "siyu_copy", version, log=lambda _: None)  # type: ignore[arg-type]
        for table in TABLES:
            columns = [r[0] for r in source.execute(f"DESCRIBE TABLE {table}")]
            data = source.execute(f"SELECT {', '.join(columns)} FROM {table}")
            if data:
                chdb.execute(f"INSERT INTO siyu_copy.{table} ({', '.join(columns)}) VALUES", data)
        chdb.execute("USE siyu_copy")
        assert read_views(chdb) == read_views(source)
        assert _answers(chdb) == _answers(source)
    finally:
        source.disconnect()
        chdb.disconnect()


def _reset_to_earliest(penv: PipelineEnv) -> None:
    s = penv.settings()
    groups = {
        s.app_id: [s.topic_events, s.topic_by_user, s.topic_by_share, s.topic_by_sharer],
        f"{s.app_id}-sink": [s.topic_rows, s.topic_dead_letters],
    }
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    try:
        for group, topics in groups.items():
            specs = {
                TopicPartition(t, p): OffsetSpec.EARLIEST
                for t in topics
                for p in range(s.topic_partitions)
            }

            def reset(group: str = group, specs: dict[Any, Any] = specs) -> bool:
                errors = admin.reset_group_offsets(group, specs)
                return all(getattr(e, "errno", 0) == 0 for e in errors.values())

            # Members of the stopped worker may take a moment to leave the group.
            wait_for(reset, 60, f"resetting {group} to the beginning", interval=1.0)
    finally:
        admin.close()


def test_full_replay_of_every_topic_changes_no_view(produced: Produced) -> None:
    """Every consumer group back to offset 0: the worker reads everything again (events,
    state agents' topics, rows); views and cookbook answers stay exactly as they were."""
    client = _client(produced)
    try:
        before_views, before_answers = read_views(client), _answers(client)
        _reset_to_earliest(produced.penv)
        assert not quiescent(produced.penv), "the reset left nothing to replay"
        worker = Worker(produced.penv, produced.log_dir / "replay.log")
        try:
            worker.wait_ready()
            wait_for(lambda: quiescent(produced.penv), 300, "the replay to finish", interval=0.5)
        finally:
            worker.stop()
        assert read_views(client) == before_views
        assert _answers(client) == before_answers
        log = (produced.log_dir / "replay.log").read_text()
        assert "skipped" in log and "replayed messages" in log
    finally:
        client.disconnect()
