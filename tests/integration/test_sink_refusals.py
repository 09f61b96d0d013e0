"""Rows the ClickHouse client cannot encode are dead-lettered one by one; their neighbours
land and the sink goes on.

Every row on the rows topic comes from siyu's own agents, so a wrongly typed value means a
bug or a foreign producer. Either way it must not stop the sink: retried forever, it would
hold back every row behind it; raised, it would end the sink's consumer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from pipeline.contract.deadletter import (
    H_DETAIL,
    H_INDEX,
    H_OFFSET,
    H_PARTITION,
    H_REASON,
    H_TIMESTAMP,
    H_TOPIC,
)
from pipeline.contract.events import decode_message
from pipeline.sink.rows import EVENTS, RowBatch, event_row
from tests.integration.pipeline_env import PipelineEnv, produce, running_worker, wait_for
from tests.unit.contract.test_events import purchase

_COLUMN = {name: i for i, name in enumerate(EVENTS.columns)}


def _row(event_id: str, offset: int, **bad: Any) -> list[Any]:
    decoded = decode_message(orjson.dumps(purchase(event_id=event_id, user_id="u-sink")))
    row = event_row(decoded.events[0], 0, offset, 1_790_000_000)
    for column, value in bad.items():
        row[_COLUMN[column]] = value
    return row


async def _produce_null_header(
    bootstrap: str, topic: str, headers: list[tuple[str, bytes | None]]
) -> None:
    # kafka-python refuses a header without a value; the protocol and aiokafka allow it.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"odd-letter", headers=headers)
    finally:
        await producer.stop()


def _assert_the_sink_goes_on(penv: PipelineEnv, event_id: str, offset: int) -> None:
    """The sink is still consuming: a row sent now lands too."""
    s = penv.settings()
    later = RowBatch(EVENTS.name, EVENTS.columns, [_row(event_id, offset)])
    produce(s.kafka_bootstrap, s.topic_rows, later.encode_chunks(1000))
    wait_for(
        lambda: penv.query(
            "SELECT count() FROM events FINAL WHERE event_id = %(e)s", {"e": event_id}
        )
        == [(1,)],
        60,
        f"{event_id}, sent after the bad input",
    )


def test_rows_the_client_cannot_encode_are_dead_lettered_and_the_sink_goes_on(
    penv: PipelineEnv, tmp_path: Path
) -> None:
    s = penv.settings()
    good = [_row(f"sink-good-{i}", 100 + i) for i in range(5)]
    bad = {
        # Each kind of value the driver refuses with a different exception.
        "sink-bad-int": _row("sink-bad-int", 200, kafka_offset="not a number"),
        "sink-bad-decimal": _row("sink-bad-decimal", 201, amount="a lot"),
        "sink-bad-string": _row("sink-bad-string", 202, channel=12345),
        "sink-bad-time": _row("sink-bad-time", 203, occurred_at="yesterday"),
    }
    rows = [good[0], bad["sink-bad-int"], good[1], bad["sink-bad-decimal"], good[2]]
    rows += [bad["sink-bad-string"], good[3], bad["sink-bad-time"], good[4]]
    batch = RowBatch(EVENTS.name, EVENTS.columns, rows).encode_chunks(1000)

    # Published in an earlier month than this run: a replay of the rows topic reads the same
    # timestamp again, and it decides the letter's partition of dead_letters.
    published = dt.datetime(2026, 1, 15, 8, 30, tzinfo=dt.UTC)
    with running_worker(penv, tmp_path / "worker.log") as worker:
        produce(
            s.kafka_bootstrap,
            s.topic_rows,
            batch,
            timestamp_ms=int(published.timestamp() * 1000),
        )
        refused = wait_for(
            lambda: (
                r := penv.query(
                    "SELECT toString(reason), detail, payload, source_timestamp "
                    "FROM dead_letters FINAL WHERE source_topic = 'siyu-sink:events'",
                )
            )
            and len(r) >= len(bad)
            and r,
            90,
            f"{len(bad)} refused rows dead-lettered",
        )
        by_id = {
            orjson.loads(payload)["event_id"]: (reason, detail)
            for reason, detail, payload, _ in refused
        }
        assert set(by_id) == set(bad)
        assert {stamp.replace(tzinfo=dt.UTC) for *_, stamp in refused} == {published}
        assert {reason for reason, _ in by_id.values()} == {"sink_rejected"}
        # Each letter names the column the client could not encode (and its type, which
        # depends on the server's version), and what it got.
        culprits = {
            "sink-bad-int": ("kafka_offset", "str 'not a number'"),
            "sink-bad-decimal": ("amount", "str 'a lot'"),
            "sink-bad-string": ("channel", "int 12345"),
            "sink-bad-time": ("occurred_at", "str 'yesterday'"),
        }
        for event_id, (column, got) in culprits.items():
            detail = by_id[event_id][1]
            assert detail.startswith(f"column {column} ("), detail
            assert f") got {got}: " in detail, detail
        # The dead letter keeps the row as it was sent, column by column.
        original = dict(zip(EVENTS.columns, bad["sink-bad-int"], strict=True))
        payload = next(p for _, _, p, _ in refused if "sink-bad-int" in p)
        assert orjson.loads(payload) == original

        # Good rows after the last refused one are inserted after its letter: wait for them.
        good_ids = sorted(f"sink-good-{i}" for i in range(5))
        wait_for(
            lambda: sorted(
                e
                for (e,) in penv.query("SELECT event_id FROM events FINAL WHERE user_id = 'u-sink'")
            )
            == good_ids,
            60,
            "the good rows in ClickHouse",
        )

        _assert_the_sink_goes_on(penv, "sink-later", 300)
        assert worker.proc.poll() is None


def test_foreign_dead_letters_with_odd_headers_land_and_the_sink_goes_on(
    penv: PipelineEnv, tmp_path: Path
) -> None:
    """Somebody else's message on the dead-letter topic: a header without a value, and numbers
    no column can hold. Its row must still be insertable; a dead_letters row ClickHouse
    refused would have nowhere to go and stop the sink."""
    s = penv.settings()
    odd: list[tuple[str, bytes | None]] = [
        (H_REASON, b"foreign"),
        (H_DETAIL, None),
        (H_TOPIC, b"elsewhere"),
        (H_PARTITION, b"-3"),
        (H_OFFSET, str(2**70).encode()),
        (H_INDEX, str(2**40).encode()),
        (H_TIMESTAMP, str(10**17).encode()),
    ]
    with running_worker(penv, tmp_path / "worker.log") as worker:
        asyncio.run(_produce_null_header(s.kafka_bootstrap, s.topic_dead_letters, odd))
        [row] = wait_for(
            lambda: penv.query(
                "SELECT source_partition, source_offset, element_index, toString(reason), "
                "detail FROM dead_letters FINAL WHERE payload = 'odd-letter'",
            ),
            60,
            "the foreign dead letter in ClickHouse",
        )
        assert row == (0, 2**64 - 1, 2**31 - 1, "foreign", "")

        _assert_the_sink_goes_on(penv, "sink-after-odd", 400)
        assert worker.proc.poll() is None
