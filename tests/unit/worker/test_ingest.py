"""Ingest: good events pass, bad input becomes dead letters with source and reason."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.contract.deadletter import (
    H_BRAND,
    H_INDEX,
    H_OFFSET,
    H_REASON,
    Source,
)
from pipeline.sink.rows import DEAD_LETTERS, EVENTS, RowBatch, dead_letter_row, event_row
from pipeline.worker import ingest as ingest_mod
from pipeline.worker.ingest import IngestResult, ingest_message
from tests.unit.contract.test_events import purchase

SRC = Source("siyu.events", 2, 41, 1_700_000_000_123)


def test_valid_and_invalid_messages_are_separated() -> None:
    result = IngestResult()
    ingest_message(result, b"k", orjson.dumps(purchase()), SRC)
    ingest_message(result, b"k2", b"not json", SRC)
    ingest_message(
        result,
        None,
        orjson.dumps({"events": [purchase(event_id="x"), purchase(brand_id="b2", amount=-5)]}),
        SRC,
    )
    assert [e.event_id for e, _ in result.accepted] == ["e-1", "x"]
    reasons = [dict(d.headers)[H_REASON] for d in result.dead_letters]
    assert reasons == [b"invalid_json", b"schema_violation"]
    assert result.dead_letters[0].value == b"not json"
    assert result.dead_letters[0].key == b"k2"
    h = dict(result.dead_letters[1].headers)
    assert (h[H_INDEX], h[H_OFFSET], h[H_BRAND]) == (b"1", b"41", b"b2")


def test_a_bug_in_decoding_becomes_a_processing_error_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(raw: bytes) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(ingest_mod, "decode_message", boom)
    result = IngestResult()
    ingest_message(result, None, b"payload", SRC)
    [dl] = result.dead_letters
    assert dl.reason == "processing_error"
    assert dl.value == b"payload"


def test_dead_letter_row_carries_reason_source_and_original_bytes() -> None:
    result = IngestResult()
    ingest_message(result, None, b"\xff\xfe", SRC)
    [dl] = result.dead_letters
    row = dict(
        zip(DEAD_LETTERS.columns, dead_letter_row(dl.value, dl.headers, 1_800_000_000), strict=True)
    )
    assert row["reason"] == "invalid_json"
    assert row["payload"] == b"\xff\xfe"
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == (
        "siyu.events",
        2,
        41,
    )
    assert row["element_index"] == -1
    assert row["source_timestamp"] == 1_700_000_000


def test_foreign_dead_letter_without_headers_is_kept() -> None:
    row = dict(zip(DEAD_LETTERS.columns, dead_letter_row(b"x", [], 5), strict=True))
    assert row["reason"] == "unknown"
    assert row["payload"] == b"x"


def test_event_row_round_trips_through_a_row_batch() -> None:
    result = IngestResult()
    ingest_message(result, None, orjson.dumps(purchase(properties={"sku": "A1", "qty": 2})), SRC)
    ev, src = result.accepted[0]
    row = event_row(ev, src.partition, src.offset, 1_800_000_000)
    [message] = RowBatch(EVENTS.name, EVENTS.columns, [row]).encode_chunks(max_rows=10)
    batch = RowBatch.decode(message)
    rec = dict(zip(batch.columns, batch.rows[0], strict=True))
    assert rec["amount"] == "199.90"
    assert rec["occurred_at"] == 1_795_399_200  # 2026-11-23T02:00:00Z
    assert orjson.loads(rec["properties"]) == {"sku": "A1", "qty": 2}
    assert (rec["kafka_partition"], rec["kafka_offset"]) == (2, 41)


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'{"table": "system.users", "columns": [], "rows": []}',
        b'{"table": "events", "columns": ["nope"], "rows": []}',
        b'{"table": "events", "columns": ["brand_id"], "rows": [["a", "b"]]}',
        b'{"table": "events", "columns": [["brand_id"]], "rows": [[1]]}',
        b'{"table": "events", "columns": ["brand_id", "brand_id"], "rows": [["a", "b"]]}',
        b'{"table": "events", "columns": [], "rows": [[]]}',
    ],
)
def test_row_batch_refuses_unknown_tables_columns_and_ragged_rows(raw: bytes) -> None:
    with pytest.raises(ValueError):
        RowBatch.decode(raw)


def test_large_row_batches_are_split_under_the_message_limit() -> None:
    rows = [["b", f"e{i}", "x" * 300] for i in range(5000)]
    batch = RowBatch(EVENTS.name, ("brand_id", "event_id", "properties"), rows)
    chunks = batch.encode_chunks(max_rows=2000, max_bytes=200_000)
    assert all(len(c) <= 200_000 for c in chunks)
    decoded = [RowBatch.decode(c) for c in chunks]
    assert all(len(d.rows) <= 2000 for d in decoded)
    assert [r for d in decoded for r in d.rows] == rows


def test_one_oversized_row_still_gets_a_message_of_its_own() -> None:
    rows = [["b", "big", "x" * 5000], ["b", "small", ""]]
    batch = RowBatch(EVENTS.name, ("brand_id", "event_id", "properties"), rows)
    chunks = batch.encode_chunks(max_rows=10, max_bytes=1000)
    assert [len(RowBatch.decode(c).rows) for c in chunks] == [1, 1]


@given(
    ahead_s=st.integers(min_value=-(10**7), max_value=10**7),
    max_ahead_s=st.integers(min_value=0, max_value=10**5),
)
def test_an_event_is_accepted_exactly_when_it_is_not_too_far_after_its_message(
    ahead_s: int, max_ahead_s: int
) -> None:
    sent = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
    occurred = (sent + dt.timedelta(seconds=ahead_s)).isoformat()
    source = Source("siyu.events", 0, 5, int(sent.timestamp() * 1000))
    result = IngestResult()
    ingest_message(result, None, orjson.dumps(purchase(occurred_at=occurred)), source, max_ahead_s)
    if ahead_s <= max_ahead_s:
        assert len(result.accepted) == 1 and not result.dead_letters
    else:
        [dl] = result.dead_letters
        assert not result.accepted
        assert dict(dl.headers)[H_REASON] == b"occurred_in_future"


@pytest.mark.parametrize("timestamp_ms", [0, -1, 10**18])
def test_a_message_without_a_usable_timestamp_bounds_no_event(timestamp_ms: int) -> None:
    result = IngestResult()
    far = purchase(occurred_at="2099-01-01T00:00:00Z")
    source = Source("siyu.events", 0, 5, timestamp_ms)
    ingest_message(result, None, orjson.dumps(far), source, 900)
    assert [e.event_id for e, _ in result.accepted] == ["e-1"]
