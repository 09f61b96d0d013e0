"""The dead-letter path: bad input keeps its original bytes and a machine-readable reason.

A dead letter is a Kafka message on the dead-letter topic whose value is the original
bytes (for one bad element of an envelope, that element's JSON) and whose headers say
why and where it came from. Operators can read, fix and replay it; the sink also lands it
in the ClickHouse ``dead_letters`` table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from pipeline.contract.events import Reject
from pipeline.sink.rows import Row

H_REASON = "siyu-reason"
H_DETAIL = "siyu-detail"
H_TOPIC = "siyu-source-topic"
H_PARTITION = "siyu-source-partition"
H_OFFSET = "siyu-source-offset"
H_INDEX = "siyu-source-index"
H_TIMESTAMP = "siyu-source-timestamp-ms"
H_BRAND = "siyu-brand-id"

_MAX_DETAIL = 2000


@dataclass(frozen=True, slots=True)
class Source:
    """Where an input was read: topic, partition, offset, Kafka timestamp (ms)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


def brand_of(payload: bytes) -> str:
    """``brand_id`` of a JSON object payload if it has a readable one, else ``''``."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    brand = obj.get("brand_id") if isinstance(obj, dict) else None
    return brand[:64] if isinstance(brand, str) else ""


def dead_letter_headers(reject: Reject, source: Source) -> list[tuple[str, bytes]]:
    """Kafka headers of the dead letter for ``reject`` read at ``source``."""
    index = -1 if reject.index is None else reject.index
    return [
        (H_REASON, str(reject.reason).encode()),
        (H_DETAIL, reject.detail[:_MAX_DETAIL].encode()),
        (H_TOPIC, source.topic.encode()),
        (H_PARTITION, str(source.partition).encode()),
        (H_OFFSET, str(source.offset).encode()),
        (H_INDEX, str(index).encode()),
        (H_TIMESTAMP, str(source.timestamp_ms).encode()),
        (H_BRAND, brand_of(reject.payload).encode()),
    ]


def dead_letter_row(payload: bytes, headers: Sequence[tuple[str, bytes | None]], now: int) -> Row:
    """The ``dead_letters`` row of a dead-letter message (columns of ``DEAD_LETTERS``).

    Missing headers (a message somebody else put on the topic) give empty values rather than
    losing the message. So do headers without a value, and numbers out of their column's
    range are clamped to it: ClickHouse must take every dead-letters row, since a refused one
    has no further place to go and would stop the sink.
    """
    h = {k: (v or b"").decode("utf-8", "replace") for k, v in headers}
    ts_ms = _int(h.get(H_TIMESTAMP), now * 1000, 0, _UINT32 * 1000)
    return [
        h.get(H_TOPIC, ""),
        _int(h.get(H_PARTITION), 0, 0, _UINT32),
        _int(h.get(H_OFFSET), 0, 0, 2**64 - 1),
        _int(h.get(H_INDEX), -1, -(2**31), 2**31 - 1),
        ts_ms // 1000,
        h.get(H_BRAND, ""),
        h.get(H_REASON, "unknown"),
        h.get(H_DETAIL, ""),
        payload,
        now,
    ]


#: The largest UInt32 (and DateTime, in seconds).
_UINT32 = 2**32 - 1


def _int(text: str | None, default: int, lo: int, hi: int) -> int:
    try:
        value = int(text) if text is not None else default
    except ValueError:
        value = default
    return min(max(value, lo), hi)
