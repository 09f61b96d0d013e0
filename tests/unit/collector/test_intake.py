"""A body in, accepted events and rejects out: what the collector refuses and why."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from pipeline.collector.intake import Intake, Refusal, take_in
from pipeline.contract.events import RejectReason, decode_message
from pipeline.contract.http import ErrorCode
from tests.unit.contract.test_events import purchase

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def _take(body: Any, brand: str = "b", max_events: int = 1000) -> Intake | Refusal:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return take_in(raw, brand, NOW, max_events)


def test_single_event_is_accepted_and_stamped() -> None:
    got = _take(purchase(received_at="2020-01-01T00:00:00Z"))
    assert isinstance(got, Intake)
    assert [e.event_id for e in got.accepted] == ["e-1"]
    assert got.accepted[0].received_at == NOW  # the client's own value is overwritten
    assert [(r.index, r.status) for r in got.results] == [(0, "accepted")]


def test_envelope_accepts_exactly_the_valid_events_and_says_why_not() -> None:
    body = {
        "events": [
            purchase(event_id="ok-1"),
            purchase(event_id="bad-amount", amount="-1"),
            purchase(event_id="ok-2", order_id="o-2"),
            "not an object",
            purchase(event_id="bad-type", type="refund"),
        ]
    }
    got = _take(body)
    assert isinstance(got, Intake)
    assert [e.event_id for e in got.accepted] == ["ok-1", "ok-2"]
    assert [(r.index, r.event_id, r.status, r.reason) for r in got.results] == [
        (0, "ok-1", "accepted", None),
        (1, "bad-amount", "rejected", RejectReason.SCHEMA_VIOLATION),
        (2, "ok-2", "accepted", None),
        (3, None, "rejected", RejectReason.NOT_AN_OBJECT),
        (4, "bad-type", "rejected", RejectReason.UNKNOWN_TYPE),
    ]
    assert "amount" in (got.results[1].detail or "")
    # The rejects carry the element's own bytes and index, for the dead-letter topic.
    assert [r.index for r in got.rejects] == [1, 3, 4]
    assert orjson.loads(got.rejects[0].payload)["event_id"] == "bad-amount"


def test_a_single_bad_event_keeps_the_whole_body_as_payload() -> None:
    raw = orjson.dumps(purchase(currency="yuan"))
    got = _take(raw)
    assert isinstance(got, Intake)
    assert got.accepted == []
    assert got.rejects[0].payload == raw
    assert got.rejects[0].index is None


def test_accepted_events_decode_like_kafka_messages() -> None:
    got = _take({"events": [purchase(event_id=f"e{i}", order_id=f"o{i}") for i in range(3)]})
    assert isinstance(got, Intake)
    from pipeline.contract.events import encode_envelope

    again = decode_message(encode_envelope(got.accepted))
    assert again.rejects == [] and again.events == got.accepted


def test_malformed_json_is_400() -> None:
    got = _take(b'{"events": [')
    assert isinstance(got, Refusal)
    assert (got.status, got.error) == (400, ErrorCode.MALFORMED_JSON)
    assert "not valid JSON" in got.message


def test_bodies_that_are_neither_event_nor_envelope_are_400() -> None:
    for body in ([purchase()], {"events": {"x": 1}}, {"events": [], "extra": 1}, "text"):
        got = _take(body)
        assert isinstance(got, Refusal), body
        assert (got.status, got.error) == (400, ErrorCode.MALFORMED_BODY)


def test_too_many_events_is_413() -> None:
    got = _take({"events": [purchase(event_id=f"e{i}") for i in range(6)]}, max_events=5)
    assert isinstance(got, Refusal)
    assert (got.status, got.error) == (413, ErrorCode.TOO_MANY_EVENTS)
    assert "6 events" in got.message and "at most 5" in got.message


def test_another_brands_event_refuses_the_whole_request() -> None:
    body = {"events": [purchase(), purchase(event_id="x", brand_id="other", amount="-1")]}
    got = _take(body, brand="b")
    assert isinstance(got, Refusal)
    assert (got.status, got.error) == (403, ErrorCode.WRONG_BRAND)
    assert "'other'" in got.message and "'b'" in got.message


def test_an_event_without_brand_is_rejected_not_refused() -> None:
    ev = purchase()
    del ev["brand_id"]
    got = _take({"events": [ev, purchase(event_id="e-2")]})
    assert isinstance(got, Intake)
    assert [r.status for r in got.results] == ["rejected", "accepted"]
    assert got.results[0].reason == RejectReason.SCHEMA_VIOLATION


def test_empty_envelope_is_fine() -> None:
    got = _take({"events": []})
    assert isinstance(got, Intake) and got.results == []


def test_an_event_from_a_clock_running_ahead_is_rejected_at_once() -> None:
    soon = purchase(event_id="soon", occurred_at=(NOW + dt.timedelta(minutes=10)).isoformat())
    later = purchase(event_id="later", occurred_at=(NOW + dt.timedelta(hours=8)).isoformat())
    got = take_in(orjson.dumps({"events": [soon, later]}), "b", NOW, 1000, max_ahead_s=900)
    assert isinstance(got, Intake)
    assert [e.event_id for e in got.accepted] == ["soon"]
    assert [(r.index, r.status, r.reason) for r in got.results] == [
        (0, "accepted", None),
        (1, "rejected", RejectReason.OCCURRED_IN_FUTURE),
    ]
    assert got.rejects[0].index == 1
