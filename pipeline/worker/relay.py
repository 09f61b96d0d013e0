"""Relays: the messages the worker's agents send each other on the ``by-*`` topics.

A relay is one Kafka message ``{"wm": {partition: µs, ...}, "m": [addressed, ...]}``: the
:class:`~pipeline.domain.Addressed` messages of one batch for one partition of one
processor's topic, and the sender's watermark (per partition of the events topic, the
event-time progress whose consequences were processed, see :mod:`pipeline.worker.watermarks`).
One message per batch and partition, because Faust's costs are per message. (Producers'
``{"events": [...]}`` messages are *envelopes*, :mod:`pipeline.contract.envelopes`.)

Each message goes to the partition that owns its key (:func:`partition_for`), so a key's
messages, its table entry and its changelog record share one partition number (Faust writes
a table's changelog to the partition of the event being processed).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from pipeline.contract.envelopes import MAX_MESSAGE_BYTES, json_array_chunks
from pipeline.contract.partitioning import partition_for
from pipeline.domain import Addressed, ProcessorName

#: Most messages in one relay (besides the byte limit).
MAX_RELAY_MESSAGES = 10_000

#: Addressed messages (their dict form) per destination ``(topic, partition)``.
Relays = dict[tuple[str, int], list[dict[str, Any]]]


def new_relays() -> Relays:
    return defaultdict(list)


class Router:
    """Where an :class:`Addressed` message goes: its processor's topic, its key's partition."""

    def __init__(self, topics: Mapping[ProcessorName, str], partitions: int) -> None:
        self.topics = dict(topics)
        self.partitions = partitions

    def route(self, relays: Relays, messages: Iterable[Addressed]) -> None:
        """Add ``messages`` to ``relays``, each under its destination."""
        n = self.partitions
        topics = self.topics
        for m in messages:
            relays[(topics[m.processor], partition_for(m.brand_id, m.key, n))].append(m.to_dict())

    def all_partitions(self) -> list[tuple[str, int]]:
        """Every ``(topic, partition)`` of the processors' topics."""
        return [(t, p) for t in self.topics.values() for p in range(self.partitions)]


def _head(watermarks: Mapping[int, int]) -> bytes:
    return b'{"wm":' + orjson.dumps({str(k): v for k, v in watermarks.items()})


def encode_relays(watermarks: Mapping[int, int], relays: Relays) -> list[tuple[str, int, bytes]]:
    """``(topic, partition, value)`` of every relay message for ``relays``, each carrying
    ``watermarks``; a destination with more than one message's worth gets several."""
    head = _head(watermarks) + b',"m":['
    return [
        (topic, partition, value)
        for (topic, partition), items in relays.items()
        for value in json_array_chunks(
            head,
            (orjson.dumps(i) for i in items),
            b"]}",
            MAX_RELAY_MESSAGES,
            MAX_MESSAGE_BYTES,
        )
    ]


def watermark_relay(watermarks: Mapping[int, int]) -> bytes:
    """A relay with no messages: it only moves its receiver's watermark."""
    return _head(watermarks) + b',"m":[]}'


#: What :func:`decode_relay` raises for a message that is not a relay.
BAD_RELAY = (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError)


def decode_relay(raw: bytes) -> tuple[dict[int, int], list[Any]]:
    """The watermarks and the messages (dict form) of a relay; raises one of
    :data:`BAD_RELAY` when ``raw`` is not one."""
    relay = orjson.loads(raw)
    marks = {int(k): int(v) for k, v in relay["wm"].items()}
    items = relay["m"]
    if not isinstance(items, list):
        raise TypeError(f"messages must be a list, got {type(items).__name__}")
    return marks, items
