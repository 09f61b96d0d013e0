"""The dead-letter path: bad input keeps its original bytes and a machine-readable reason.

A dead letter is a Kafka message on the dead-letter topic whose value is the original
bytes (for one bad element of an envelope, that element's JSON) and whose headers say
why and where it came from. Operators can read, fix and replay it; the sink also lands it
in the ClickHouse ``dead_letters`` table.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from pipeline.contract.events import Reject

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
        (H_BRAND, brand_of(reject.payload).encode()),  # last: DeadLetter.of reads it there
    ]


@dataclass(slots=True)
class DeadLetter:
    """A message for the dead-letter topic: original key and bytes, reason in headers (and,
    for who counts them, as fields)."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    reason: str
    #: The brand the payload names, or ``''`` (:func:`brand_of`).
    brand_id: str = ""

    @classmethod
    def of(cls, key: bytes | None, reject: Reject, source: Source) -> DeadLetter:
        """The dead letter of ``reject``, read at ``source`` with Kafka key ``key``."""
        headers = dead_letter_headers(reject, source)
        brand = headers[-1][1].decode()  # H_BRAND, computed once
        return cls(key, reject.payload, headers, reject.reason, brand)
