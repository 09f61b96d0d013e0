"""Backoff: growing, capped, jittered delays; the server's Retry-After wins (capped)."""

from __future__ import annotations

import datetime as dt
import random

from pipeline.sdk.retry import Backoff, parse_retry_after


def test_delays_grow_then_cap_with_jitter_within_half() -> None:
    b = Backoff(initial_s=0.5, maximum_s=4, multiplier=2, rng=random.Random(1))
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        for _ in range(50):
            d = b.delay(attempt)
            assert base / 2 <= d <= base


def test_jitter_spreads_delays() -> None:
    b = Backoff(rng=random.Random(2))
    assert len({round(b.delay(3), 6) for _ in range(20)}) > 10


def test_retry_after_is_honoured_and_capped() -> None:
    b = Backoff(max_retry_after_s=30)
    assert b.delay(1, retry_after_s=7) == 7
    assert b.delay(1, retry_after_s=3600) == 30
    assert b.delay(1, retry_after_s=-5) == 0


def test_parse_retry_after() -> None:
    now = dt.datetime(2026, 11, 23, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 12 ") == 12.0
    assert parse_retry_after("Mon, 23 Nov 2026 12:00:10 GMT", now) == 10.0
    assert parse_retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
