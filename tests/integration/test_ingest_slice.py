"""The first vertical slice on the real Kafka and ClickHouse: events in, each valid event in
ClickHouse exactly once, each invalid one on the dead-letter topic with its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer

from pipeline.contract.deadletter import H_INDEX, H_REASON
from tests.integration.pipeline_env import (
    PipelineEnv,
    produce,
    read_messages,
    running_worker,
    wait_for,
)
from tests.unit.contract.test_events import purchase


def _event(i: int, etype: str) -> dict[str, Any]:
    ev = purchase(
        event_id=f"ev-{i}",
        user_id=f"u{i % 37}",
        order_id=f"o{i}",
        occurred_at=f"2026-11-2{i % 3}T1{i % 10}:00:0{i % 7}+08:00",
    )
    if etype != "purchase":
        del ev["order_id"], ev["amount"], ev["currency"]
        ev["type"] = etype
        if etype == "share":
            ev["share_id"] = f"s{i}"
    return ev


def _input() -> tuple[list[bytes], set[str], list[tuple[bytes, str]]]:
    """Messages to send, the distinct valid event ids, and (payload, reason) of each bad one."""
    valid = [_event(i, ("click", "share", "purchase")[i % 3]) for i in range(600)]
    msgs = [orjson.dumps(e) for e in valid[:100]]  # single-event messages
    msgs += [orjson.dumps({"events": valid[i : i + 50]}) for i in range(100, 600, 50)]
    msgs += [orjson.dumps(valid[7]), orjson.dumps({"events": valid[10:20]})]  # duplicates
    bad: list[tuple[bytes, str]] = [
        (b"{not json", "invalid_json"),
        (orjson.dumps(purchase(event_id="bad1", currency="RMB1")), "schema_violation"),
        (orjson.dumps(purchase(event_id="bad2", schema_version=9)), "unsupported_schema_version"),
        (orjson.dumps(purchase(event_id="bad3", type="like")), "unknown_type"),
        (b'"just a string"', "not_an_object"),
        # A sender's clock years ahead: it would drag the watermark with it.
        (
            orjson.dumps(purchase(event_id="bad5", occurred_at="2099-01-01T00:00:00Z")),
            "occurred_in_future",
        ),
    ]
    msgs += [p for p, _ in bad]
    bad_element = purchase(event_id="bad4", amount="-3")
    msgs.append(orjson.dumps({"events": [_event(1000, "click"), bad_element]}))
    bad.append((orjson.dumps(bad_element), "schema_violation"))
    ids = {e["event_id"] for e in valid} | {"ev-1000"}
    return msgs, ids, bad


def _ids_in_clickhouse(penv: PipelineEnv) -> list[tuple[str, int]]:
    rows = penv.query(
        "SELECT event_id, count() FROM events FINAL GROUP BY event_id ORDER BY event_id"
    )
    return [(str(a), int(b)) for a, b in rows]


def test_valid_events_land_once_and_invalid_ones_are_dead_lettered(
    penv: PipelineEnv, tmp_path: Path
) -> None:
    msgs, ids, bad = _input()
    s = penv.settings()
    with running_worker(penv, tmp_path / "worker.log"):
        produce(s.kafka_bootstrap, s.topic_events, msgs)
        landed = wait_for(
            lambda: (r := _ids_in_clickhouse(penv)) and len(r) >= len(ids) and r,
            90,
            f"{len(ids)} events in ClickHouse",
        )
        assert {i for i, _ in landed} == ids
        assert all(n == 1 for _, n in landed)

        letters = read_messages(s.kafka_bootstrap, s.topic_dead_letters, len(bad))
        got = sorted((m.value, dict(m.headers)[H_REASON].decode()) for m in letters)
        assert got == sorted(bad)
        element = next(m for m in letters if dict(m.headers)[H_INDEX] == b"1")
        assert orjson.loads(element.value)["event_id"] == "bad4"

        # The same input again (a producer retry, a replay by the brand): nothing new.
        produce(s.kafka_bootstrap, s.topic_events, msgs)
        _wait_caught_up(penv, s.app_id, s.app_id + "-sink")
        assert _ids_in_clickhouse(penv) == landed

    by_reason = sorted({r for _, r in bad})
    expected = [(r, 2 * sum(1 for _, x in bad if x == r)) for r in by_reason]
    assert _dead_in_clickhouse(penv) == expected

    # Replay everything from the beginning with new consumer groups: no result changes.
    replay = f"replay-{penv.name}"
    with running_worker(penv, tmp_path / "replay.log", SIYU_APP_ID=replay):
        _wait_caught_up(penv, replay, replay + "-sink")
    assert _ids_in_clickhouse(penv) == landed
    assert _dead_in_clickhouse(penv) == expected


def _dead_in_clickhouse(penv: PipelineEnv) -> list[tuple[str, int]]:
    rows = penv.query(
        "SELECT toString(reason), count() FROM dead_letters FINAL GROUP BY reason ORDER BY reason"
    )
    return [(str(r), int(n)) for r, n in rows]


def _wait_caught_up(penv: PipelineEnv, ingest_group: str, sink_group: str) -> None:
    """Wait until the ingest group has committed the end of the events topic, then the sink
    group the end of the rows and dead-letter topics (so everything is in ClickHouse)."""
    s = penv.settings()
    wait_for(
        lambda: _group_at_end(
            s.kafka_bootstrap, ingest_group, [s.topic_events], s.topic_partitions
        ),
        90,
        f"{ingest_group} at the end",
    )
    wait_for(
        lambda: _group_at_end(
            s.kafka_bootstrap, sink_group, [s.topic_rows, s.topic_dead_letters], s.topic_partitions
        ),
        90,
        f"{sink_group} at the end",
    )


def _group_at_end(bootstrap: str, group: str, topics: list[str], partitions: int) -> bool:
    from kafka import KafkaAdminClient, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        committed = admin.list_group_offsets({group: None}).get(group, {})
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        ends = consumer.end_offsets(tps)
        return all(
            tp in committed and committed[tp].offset >= ends[tp] for tp in tps if ends[tp] > 0
        )
    finally:
        admin.close()
        consumer.close()
