"""How producers pack events into messages for the events topic (the collector, the SDK).

Faust's cost is per Kafka message, so producers send envelopes ``{"events": [...]}`` rather
than one message per event. Each event goes to the partition chosen by its brand and user,
so one user's events stay in order within the topic and a producer sends at most one
envelope per partition for a batch (more only when the count or byte limit splits it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.contract.events import MAX_EVENTS_PER_ENVELOPE, AnyEvent, encode_event
from pipeline.contract.partitioning import partition_for

#: Largest Kafka message siyu produces, bytes: producers' envelopes, the agents' relays and
#: row batches alike. Under the broker's default 1 MiB message limit (``message.max.bytes``)
#: and the producers' default ``max_request_size``.
MAX_MESSAGE_BYTES = 900_000

_HEAD = b'{"events":['
_TAIL = b"]}"


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
    max_bytes: int = MAX_MESSAGE_BYTES,
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
        p = partition_for(event.brand_id, event.user_id, partitions)
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


def json_array_chunks(
    head: bytes, items: Iterable[bytes], tail: bytes, max_items: int, max_bytes: int
) -> list[bytes]:
    """``head + item,item,... + tail`` messages of at most ``max_items`` items and about
    ``max_bytes`` bytes each (an item larger than that on its own gets its own message)."""
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = len(head) + len(tail)
    for item in items:
        if chunk and (len(chunk) >= max_items or size + len(item) + 1 > max_bytes):
            out.append(head + b",".join(chunk) + tail)
            chunk, size = [], len(head) + len(tail)
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        out.append(head + b",".join(chunk) + tail)
    return out
