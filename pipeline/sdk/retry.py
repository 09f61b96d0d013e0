"""Retry timing: exponential backoff with jitter, and the server's Retry-After first.

Jitter spreads the retries of many emitters that failed at the same moment (a broker
restart) so they do not all come back in the same instant.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime


@dataclass
class Backoff:
    """Delay before retry number ``attempt`` (1 = the first retry)."""

    initial_s: float = 0.2
    maximum_s: float = 10.0
    multiplier: float = 2.0
    #: Longest Retry-After honoured; a larger one is capped so a bad header cannot park
    #: the emitter for hours.
    max_retry_after_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait: the server's Retry-After when it gave one (capped), else
        ``initial * multiplier**(attempt-1)`` capped at ``maximum``, with "equal jitter"
        (between half and all of it)."""
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_retry_after_s)
        base = min(self.maximum_s, self.initial_s * self.multiplier ** max(attempt - 1, 0))
        return base / 2 + self.rng.uniform(0, base / 2)


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds of a Retry-After header: delta-seconds or an HTTP date; None if absent or
    unreadable (the caller falls back to its own backoff)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max((when - now).total_seconds(), 0.0)
