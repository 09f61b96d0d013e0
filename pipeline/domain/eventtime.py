"""Event time as integer microseconds since the Unix epoch (UTC).

Every rule in the domain core compares event times (``occurred_at``), never wall
time. Integers keep comparisons at window edges exact: a touch exactly seven
days before a purchase is exactly seven days before it, with no float rounding.
"""

from __future__ import annotations

import datetime as dt

US_PER_SECOND = 1_000_000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)
#: Smaller than any real event time: the watermark before anything was seen.
NO_WATERMARK = -(2**62)
#: Larger than any real event time: a watermark that expires everything.
END_OF_TIME = 2**62


def to_us(moment: dt.datetime) -> int:
    """An aware datetime as event-time microseconds since the epoch (UTC)."""
    return (moment - EPOCH) // _ONE_US


def from_us(us: int) -> dt.datetime:
    """Event-time microseconds since the epoch as an aware UTC datetime."""
    return EPOCH + dt.timedelta(microseconds=us)


def seconds_to_us(seconds: int) -> int:
    """A duration in whole seconds as microseconds."""
    return seconds * US_PER_SECOND
