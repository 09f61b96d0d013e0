"""Ingest: raw Kafka messages in, accepted events and dead letters out. No Faust, no I/O.

Each message is decoded on its own (one event or an envelope), so one bad message or one
bad element never takes good events down with it. An unexpected exception while handling a
message is itself turned into a dead letter (reason ``processing_error``) with the original
bytes: the worker never crashes on input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pipeline.contract.deadletter import Source, dead_letter_headers
from pipeline.contract.events import (
    ClickEvent,
    PurchaseEvent,
    Reject,
    RejectReason,
    ShareEvent,
    decode_message,
    not_after,
)

log = logging.getLogger(__name__)

AnyEvent = ClickEvent | ShareEvent | PurchaseEvent


@dataclass(slots=True)
class DeadLetter:
    """A message for the dead-letter topic: original key and bytes, reason in headers."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    reason: str

    @classmethod
    def of(cls, key: bytes | None, reject: Reject, source: Source) -> DeadLetter:
        """The dead letter of ``reject``, read at ``source`` with Kafka key ``key``."""
        return cls(key, reject.payload, dead_letter_headers(reject, source), reject.reason)


@dataclass(slots=True)
class IngestResult:
    """What a batch of messages produced: accepted events (with their source) and rejects."""

    accepted: list[tuple[AnyEvent, Source]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def reject(self, key: bytes | None, reject: Reject, source: Source) -> None:
        self.dead_letters.append(DeadLetter.of(key, reject, source))


def ingest_message(
    result: IngestResult,
    key: bytes | None,
    value: bytes | None,
    source: Source,
    max_ahead_s: float | None = None,
) -> None:
    """Decode one message into ``result``; never raises for bad input.

    With ``max_ahead_s``, an event whose ``occurred_at`` is more than that after the
    message's Kafka timestamp is rejected (``occurred_in_future``, see
    :func:`pipeline.contract.events.not_after`).
    """
    raw = value or b""
    latest = None if max_ahead_s is None else not_after(source.timestamp_ms / 1000, max_ahead_s)
    try:
        decoded = decode_message(raw, latest)
    except Exception as err:  # a bug must not stop the stream; keep the bytes and say why
        log.exception("ingest failed on %s[%d]@%d", source.topic, source.partition, source.offset)
        result.reject(key, Reject(RejectReason.PROCESSING_ERROR, repr(err), raw), source)
        return
    for event in decoded.events:
        result.accepted.append((event, source))
    for rej in decoded.rejects:
        result.reject(key, rej, source)
