"""Packing events into envelopes for the events topic: per partition, bounded, lossless."""

from __future__ import annotations

import pytest

from pipeline.contract.envelopes import pack_envelopes
from pipeline.contract.events import decode_message
from pipeline.contract.partitioning import partition_for
from pipeline.sdk.track import click_event


def _events(n: int, users: int = 7, brand: str = "b") -> list:  # type: ignore[type-arg]
    return [click_event(brand, f"u{i % users}", "app", event_id=f"e{i}") for i in range(n)]


def test_every_event_lands_once_in_its_users_partition_in_order() -> None:
    events = _events(200)
    packed = pack_envelopes(events, partitions=4)
    seen = []
    for p in packed:
        decoded = decode_message(p.value)
        assert decoded.rejects == []
        assert [e.event_id for e in decoded.events] == [e.event_id for e in p.events]
        assert {partition_for(e.brand_id, e.user_id, 4) for e in p.events} == {p.partition}
        seen.extend(e.event_id for e in p.events)
    assert sorted(seen) == sorted(e.event_id for e in events)
    # Within a partition the order of tracking is kept.
    for part in {p.partition for p in packed}:
        ids = [e.event_id for p in packed if p.partition == part for e in p.events]
        expected = [e.event_id for e in events if partition_for(e.brand_id, e.user_id, 4) == part]
        assert ids == expected


def test_count_and_byte_limits_split_envelopes() -> None:
    events = _events(50, users=1)
    by_count = pack_envelopes(events, 1, max_events=20)
    assert [len(p.events) for p in by_count] == [20, 20, 10]
    one = len(pack_envelopes(events[:1], 1)[0].value)
    by_bytes = pack_envelopes(events, 1, max_bytes=one * 5)
    assert all(len(p.value) <= one * 5 for p in by_bytes)
    assert sum(len(p.events) for p in by_bytes) == 50
    assert len(by_bytes) > 1


def test_an_event_larger_than_the_byte_limit_still_gets_an_envelope() -> None:
    events = _events(3, users=1)
    packed = pack_envelopes(events, 1, max_bytes=10)
    assert [len(p.events) for p in packed] == [1, 1, 1]


def test_partition_of_a_user_is_stable_and_spread() -> None:
    parts = {partition_for("b", f"u{i}", 8) for i in range(200)}
    assert parts == set(range(8))
    assert partition_for("b", "u1", 8) == partition_for("b", "u1", 8)
    assert partition_for("b", "u1", 1) == 0


@pytest.mark.parametrize(("partitions", "max_events"), [(0, 10), (1, 0), (1, 1001)])
def test_bad_limits_are_refused(partitions: int, max_events: int) -> None:
    with pytest.raises(ValueError):
        pack_envelopes(_events(1), partitions, max_events=max_events)
