"""How producers pack events into messages for the events topic (the collector, the SDK).

Faust's cost is per Kafka message, so producers send envelopes ``{"events": [...]}`` rather
than one message per event. Each event goes to the partition chosen by its brand and user,
so one user's events stay in order within the topic and a producer sends at most one
envelope per partition for a batch (more only when the count or byte limit splits it).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.contract.events import (
    MAX_EVENTS_PER_ENVELOPE,
    ClickEvent,
    PurchaseEvent,
    ShareEvent,
    encode_event,
)

AnyEvent = ClickEvent | ShareEvent | PurchaseEvent

#: Largest envelope a producer builds, bytes: under the broker's default 1 MiB message
#: limit (``message.max.bytes``) and the producers' default ``max_request_size``.
MAX_ENVELOPE_BYTES = 900_000

_HEAD = b'{"events":['
_TAIL = b"]}"


def user_partition(brand_id: str, user_id: str, partitions: int) -> int:
    """The events-topic partition of a brand's user: CRC-32, stable across processes."""
    return zlib.crc32(f"{brand_id}\x1f{user_id}".encode()) % partitions


@dataclass(frozen=True, slots=True)
class Packed:
    """One envelope ready to send: its partition, its bytes and the events it carries."""

    partition: int
    value: bytes
    events: tuple[AnyEvent, ...]


def pack_envelopes(
    events: Iterable[AnyEvent],
    partitions: int,
    max_events: int = MAX_EVENTS_PER_ENVELOPE,
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> list[Packed]:
    """Envelopes for ``events``: grouped by partition (order kept within each), at most
    ``max_events`` events and about ``max_bytes`` bytes each (an event larger than that on
    its own still gets an envelope of its own rather than being dropped)."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got {partitions}")
    if not 1 <= max_events <= MAX_EVENTS_PER_ENVELOPE:
        raise ValueError(f"max_events must be 1..{MAX_EVENTS_PER_ENVELOPE}, got {max_events}")
    by_partition: dict[int, list[tuple[AnyEvent, bytes]]] = {}
    for event in events:
        p = user_partition(event.brand_id, event.user_id, partitions)
        by_partition.setdefault(p, []).append((event, encode_event(event)))
    out: list[Packed] = []
    for p in sorted(by_partition):
        out.extend(_chunks(p, by_partition[p], max_events, max_bytes))
    return out


def _chunks(
    partition: int, items: Sequence[tuple[AnyEvent, bytes]], max_events: int, max_bytes: int
) -> list[Packed]:
    out: list[Packed] = []
    chunk: list[tuple[AnyEvent, bytes]] = []
    size = len(_HEAD) + len(_TAIL)
    for item in items:
        if chunk and (len(chunk) >= max_events or size + len(item[1]) + 1 > max_bytes):
            out.append(_packed(partition, chunk))
            chunk, size = [], len(_HEAD) + len(_TAIL)
        chunk.append(item)
        size += len(item[1]) + 1
    if chunk:
        out.append(_packed(partition, chunk))
    return out


def _packed(partition: int, chunk: list[tuple[AnyEvent, bytes]]) -> Packed:
    value = _HEAD + b",".join(raw for _, raw in chunk) + _TAIL
    return Packed(partition, value, tuple(ev for ev, _ in chunk))
