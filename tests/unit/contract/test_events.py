"""The v1 event contract: what is accepted, what is rejected and why."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
import pytest

from pipeline.contract.events import (
    MAX_EVENTS_PER_ENVELOPE,
    ClickEvent,
    PurchaseEvent,
    RejectReason,
    ShareEvent,
    decode_message,
    encode_envelope,
    encode_event,
    not_after,
)


def purchase(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "type": "purchase",
        "schema_version": 1,
        "brand_id": "b",
        "user_id": "u-1",
        "occurred_at": "2026-11-23T10:00:00+08:00",
        "channel": "app",
        "order_id": "o-1",
        "amount": "199.90",
        "currency": "CNY",
    }
    base.update(over)
    return base


def test_each_type_decodes_to_its_model() -> None:
    click = {**purchase(type="click"), "share_id": "s1"}
    del click["order_id"], click["amount"], click["currency"]
    share = {**click, "type": "share", "parent_share_id": "s0"}
    for raw, model in ((click, ClickEvent), (share, ShareEvent), (purchase(), PurchaseEvent)):
        d = decode_message(orjson.dumps(raw))
        assert d.rejects == []
        assert type(d.events[0]) is model


def test_amount_is_exact_decimal() -> None:
    ev = decode_message(orjson.dumps(purchase(amount="0.1"))).events[0]
    assert isinstance(ev, PurchaseEvent)
    assert ev.amount == Decimal("0.1")


@pytest.mark.parametrize(
    ("override", "reason", "fragment"),
    [
        ({"type": "refund"}, RejectReason.UNKNOWN_TYPE, "refund"),
        ({"schema_version": 2}, RejectReason.UNSUPPORTED_SCHEMA_VERSION, "got 2"),
        ({"currency": "yuan"}, RejectReason.SCHEMA_VIOLATION, "currency"),
        ({"amount": "-1"}, RejectReason.SCHEMA_VIOLATION, "amount"),
        ({"amount": "1.23456"}, RejectReason.SCHEMA_VIOLATION, "amount"),
        ({"occurred_at": "2026-11-23T10:00:00"}, RejectReason.SCHEMA_VIOLATION, "timezone"),
        ({"order_id": None}, RejectReason.SCHEMA_VIOLATION, "order_id"),
        ({"surprise": 1}, RejectReason.SCHEMA_VIOLATION, "surprise"),
        ({"properties": {"nested": {"a": 1}}}, RejectReason.SCHEMA_VIOLATION, "properties"),
        ({"brand_id": ""}, RejectReason.SCHEMA_VIOLATION, "brand_id"),
    ],
)
def test_bad_event_is_rejected_with_specific_reason(
    override: dict[str, Any], reason: RejectReason, fragment: str
) -> None:
    raw = orjson.dumps(purchase(**override))
    d = decode_message(raw)
    assert d.events == []
    [rej] = d.rejects
    assert rej.reason is reason
    assert fragment in rej.detail
    assert rej.payload == raw  # the original bytes, untouched


def test_invalid_json_keeps_original_bytes() -> None:
    raw = b'{"event_id": \xff broken'
    [rej] = decode_message(raw).rejects
    assert rej.reason is RejectReason.INVALID_JSON
    assert rej.payload == raw


def test_non_object_is_rejected() -> None:
    [rej] = decode_message(b"[1, 2]").rejects
    assert rej.reason is RejectReason.NOT_AN_OBJECT


def test_envelope_accepts_good_elements_and_rejects_bad_ones_by_index() -> None:
    good = [purchase(event_id=f"e{i}", order_id=f"o{i}") for i in range(3)]
    bad = purchase(event_id="bad", currency="yuan")
    d = decode_message(orjson.dumps({"events": [good[0], bad, good[1], 7, good[2]]}))
    assert [e.event_id for e in d.events] == ["e0", "e1", "e2"]
    assert [(r.index, r.reason) for r in d.rejects] == [
        (1, RejectReason.SCHEMA_VIOLATION),
        (3, RejectReason.NOT_AN_OBJECT),
    ]
    assert orjson.loads(d.rejects[0].payload) == bad


def test_envelope_over_the_limit_is_rejected_whole() -> None:
    items = [purchase(event_id=f"e{i}") for i in range(MAX_EVENTS_PER_ENVELOPE + 1)]
    d = decode_message(orjson.dumps({"events": items}))
    assert d.events == []
    assert d.rejects[0].reason is RejectReason.ENVELOPE_TOO_LARGE


def test_envelope_with_extra_keys_is_rejected() -> None:
    d = decode_message(orjson.dumps({"events": [], "brand": "x"}))
    assert d.rejects[0].reason is RejectReason.SCHEMA_VIOLATION


def test_encode_round_trips_single_and_envelope() -> None:
    events = decode_message(orjson.dumps({"events": [purchase(), purchase(event_id="e2")]})).events
    assert decode_message(encode_event(events[0])).events == [events[0]]
    assert decode_message(encode_envelope(events)).events == events


#: When :func:`purchase`'s event occurred (10:00 at +08:00).
SENT = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)


def test_an_event_later_than_its_send_time_plus_the_skew_is_rejected() -> None:
    latest = not_after(SENT.timestamp() - 900, 900)  # sent at 01:45Z, 15 minutes of skew
    on_time = purchase(event_id="on-time")  # exactly at the bound
    ahead = purchase(event_id="ahead", occurred_at="2026-11-23T10:00:01+08:00")
    raw = orjson.dumps({"events": [on_time, ahead]})
    got = decode_message(raw, latest)
    assert [e.event_id for e in got.events] == ["on-time"]
    [rej] = got.rejects
    assert (rej.reason, rej.index) == (RejectReason.OCCURRED_IN_FUTURE, 1)
    assert orjson.loads(rej.payload) == ahead
    # The sender's own value, and the bound it broke.
    assert rej.detail.startswith("occurred_at 2026-11-23T10:00:01+08:00 is after 2026-11-23T02:00")
    assert "sender's clock" in rej.detail

    single = orjson.dumps(ahead)
    [whole] = decode_message(single, latest).rejects
    assert (whole.reason, whole.payload, whole.index) == (
        RejectReason.OCCURRED_IN_FUTURE,
        single,
        None,
    )
    assert decode_message(raw).rejects == []  # no bound given: nothing is too late


@pytest.mark.parametrize("sent_at", [None, 0, -1.0, 1e15, float("inf")])
def test_an_unknown_send_time_bounds_nothing(sent_at: float | None) -> None:
    assert not_after(sent_at, 900) is None
