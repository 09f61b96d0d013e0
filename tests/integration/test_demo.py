"""``siyu demo`` on the real stack: a small demo brand goes through a real collector, Kafka,
a worker and ClickHouse, and the answers read back from ClickHouse equal the recomputation
from the generated events (on the 18.16 server, and on current ClickHouse holding a copy of
the same tables); the run leaves no Kafka topic behind."""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient

from pipeline.contract.events import RejectReason
from pipeline.demo.answers import compute_answers
from pipeline.demo.brand import BrandParams, generate
from pipeline.demo.readback import compare_answers, format_comparison, read_answers
from pipeline.demo.run import DemoOutcome, demo_command, demo_database
from pipeline.sink.clickhouse import ServerVersion, client_from_url
from pipeline.sink.migrations import migrate
from tests.chdb_client import ChdbClient
from tests.integration.pipeline_env import PipelineEnv

#: Small enough for a test, big enough for KOCs, re-shares and every kind of malformed input
#: (seven of them, one per kind the generator makes).
PARAMS = BrandParams(users=400, days=3, malformed_rate=0.005)

#: The sections the demo prints, each with its title.
SECTIONS = [
    "Where the orders came from",
    "KOLs by attributed revenue",
    "KOC leaderboard",
    "Loyalty tiers",
    "Conversion by channel",
    "Dead letters by reason",
    "Refused by the collector",
    "ClickHouse compared with the recomputation",
]


@dataclass
class Ran:
    outcome: DemoOutcome
    output: str
    penv: PipelineEnv
    topics_left: list[str]


@pytest.fixture(scope="module")
def ran(kafka_bootstrap: str, clickhouse_port: int, tmp_path_factory: Any) -> Iterator[Ran]:
    """The demo command once, in a private namespace (its database is ``siyu_<name>_demo``)."""
    penv = PipelineEnv.fresh(kafka_bootstrap, clickhouse_port)
    base = penv.settings()
    lines: list[str] = []
    try:
        outcome = demo_command(
            base, PARAMS, echo=lines.append, log_dir=tmp_path_factory.mktemp("demo")
        )
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        left = [t for t in admin.list_topics() if t.startswith(f"{base.app_id}-demo-")]
        admin.close()
        yield Ran(outcome, "\n".join(lines), penv, left)
    finally:
        ch = client_from_url(base.clickhouse_url, database="default")
        ch.execute(f"DROP DATABASE IF EXISTS {demo_database(base).clickhouse_database}")
        ch.disconnect()
        for path in Path(base.data_dir).parent.glob(Path(base.data_dir).name + "-demo-*"):
            shutil.rmtree(path, ignore_errors=True)


def test_clickhouse_answers_equal_the_recomputation(ran: Ran) -> None:
    answers, expected = ran.outcome.answers, ran.outcome.expected
    # The run exercised what the answers summarise, or equality would prove little.
    assert answers.kocs and any(k.via_shares for k in answers.top_kols)
    assert {m.kind for m in answers.credit_mix} == {"kol", "referral", "organic"}
    assert sum(t.users for t in answers.tiers[1:]) > 0  # buyers, not only visitors
    assert ran.outcome.collector_problems == []
    for comparison in ran.outcome.comparisons:
        assert comparison.agrees, format_comparison([comparison])
    assert answers == expected
    assert ran.outcome.agrees


def test_malformed_inputs_are_dead_lettered_or_refused_as_the_collector_documents(
    ran: Ran,
) -> None:
    # Per-event rejects reach dead_letters; bodies that are not an event at all get a 400.
    malformed = generate(PARAMS).malformed
    whole = {
        RejectReason.INVALID_JSON: "malformed_json",
        RejectReason.NOT_AN_OBJECT: "malformed_body",
    }
    per_event = Counter(str(m.reason) for m in malformed if m.reason not in whole)
    assert len(per_event) == 3 and set(whole) <= {m.reason for m in malformed}
    assert dict(ran.outcome.answers.dead_letters) == per_event
    assert ran.outcome.refused == Counter(whole[m.reason] for m in malformed if m.reason in whole)


def test_the_output_has_every_section_and_the_verdict(ran: Ran) -> None:
    for title in SECTIONS:
        assert title in ran.output, title
    assert "agree: all 9 answers equal the recomputation" in ran.output
    assert "DISAGREE" not in ran.output
    assert "collector answers: agree" in ran.output


def test_answers_of_another_seed_disagree(ran: Ran) -> None:
    """The comparison can fail: the same readback held against another brand's events."""
    other = generate(dataclasses.replace(PARAMS, seed=PARAMS.seed + 1))
    comparisons = compare_answers(ran.outcome.answers, compute_answers(other.arrival))
    differing = {c.field for c in comparisons if not c.agrees}
    assert {"events_by_type", "top_kols", "kocs", "dead_letters"} <= differing
    text = format_comparison(comparisons)
    assert "DISAGREE: " in text.splitlines()[-1]


def test_the_run_deletes_its_kafka_topics(ran: Ran) -> None:
    assert ran.topics_left == []


def test_the_same_answers_on_current_clickhouse(ran: Ran) -> None:
    """The readback's SQL on a current engine (chdb) over a copy of the tables."""
    s = demo_database(ran.penv.settings())
    source = client_from_url(s.clickhouse_url)
    chdb = ChdbClient()
    try:
        version = ServerVersion.parse(str(chdb.execute("SELECT version()")[0][0]))
        migrate(chdb, "demo_copy", version, log=lambda _: None)  # type: ignore[arg-type]
        tables = [
            str(name)
            for (name,) in source.execute(
                "SELECT name FROM system.tables WHERE database = %(db)s AND engine LIKE "
                "'%%MergeTree' AND name != 'siyu_schema_migrations'",
                {"db": s.clickhouse_database},
            )
        ]
        assert "purchase_credits" in tables
        for table in tables:
            columns = [r[0] for r in source.execute(f"DESCRIBE TABLE {table}")]
            data = source.execute(f"SELECT {', '.join(columns)} FROM {table}")
            if data:
                chdb.execute(f"INSERT INTO demo_copy.{table} ({', '.join(columns)}) VALUES", data)
        assert read_answers(chdb, "demo_copy", PARAMS.brand_id) == ran.outcome.answers
    finally:
        source.disconnect()
        chdb.disconnect()
