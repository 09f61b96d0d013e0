"""Ingest: the events topic's messages in; accepted events (to the state agents and the
``events`` table) and dead letters out.

:func:`ingest_message` is the pure step (no Faust, no I/O); :class:`IngestAgent` runs it on
the events topic. Each message is decoded on its own (one event or an envelope), so one bad
message or one bad element never takes good events down with it. An unexpected exception while
handling a message is itself turned into a dead letter (reason ``processing_error``) with the
original bytes: the worker never crashes on input.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.contract.deadletter import DeadLetter, Source
from pipeline.contract.events import AnyEvent, Reject, RejectReason, decode_message, not_after
from pipeline.domain import NO_WATERMARK, route_event, to_us
from pipeline.settings import Settings
from pipeline.sink.rows import event_row
from pipeline.worker.checkpoint import BatchOutput, Checkpoint, run_batches
from pipeline.worker.faust.tables import TableWrites, in_partition
from pipeline.worker.relay import Router
from pipeline.worker.sensor import Sensor
from pipeline.worker.watchdog import HoleCheck
from pipeline.worker.watermarks import WatermarkAnnouncer

log = logging.getLogger(__name__)


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


class IngestProgress:
    """Ingest's record of processed input: per partition, the last offset whose output Kafka
    confirmed. Input at or below it is a replay — the group's offsets were reset, or a
    rebalance redelivered what was done but not yet committed — and is skipped, so replaying
    the events topic never counts an event twice, however old (dedup by event id only
    reaches back one horizon). Written after the batch's output is confirmed, like states.
    """

    def __init__(self, table: Any, batch: Sequence[Any]) -> None:
        self.table = table
        self.last: dict[int, Any] = {}  # partition -> its last event in the batch
        self.done: dict[int, int] = {}
        #: partition -> the offset of its first event in the batch not processed before.
        self.first_new: dict[int, int] = {}
        self.skipped = 0
        for event in batch:
            partition = event.message.partition
            if partition not in self.last:
                with in_partition(event):
                    raw = table.get(b"%d" % partition)
                self.done[partition] = -1 if raw is None else int(raw)
            self.last[partition] = event
            offset = event.message.offset
            if offset > self.done[partition] and partition not in self.first_new:
                self.first_new[partition] = offset

    def replayed(self, event: Any) -> bool:
        if event.message.offset <= self.done[event.message.partition]:
            self.skipped += 1
            return True
        return False

    def write(self, writes: TableWrites) -> None:
        """Record the batch's last offsets as done (with its table writes)."""
        if self.skipped:
            log.info("skipped %d replayed messages (processed before)", self.skipped)
        for partition, event in self.last.items():
            if event.message.offset > self.done[partition]:
                writes.set(self.table, event, b"%d" % partition, b"%d" % event.message.offset)


class IngestAgent:
    """The ingest agent: validates the events topic's messages, dead-letters bad input, and
    routes each accepted event to the state agents (relays) and to the ``events`` table."""

    def __init__(
        self,
        s: Settings,
        offsets_table: Any,
        checkpoint: Checkpoint,
        router: Router,
        announcer: WatermarkAnnouncer,
        holes: HoleCheck,
        sensor: Sensor,
    ) -> None:
        self.s = s
        self.offsets_table = offsets_table
        self.checkpoint = checkpoint
        self.router = router
        self.announcer = announcer
        self.holes = holes
        self.sensor = sensor

    async def run(self, stream: Any) -> None:
        """The agent: the events topic's stream, a batch at a time."""
        s = self.s
        await run_batches(
            stream, s.ingest_batch, s.ingest_window_s, s.batch_max_bytes, self.ingest_batch
        )

    async def ingest_batch(self, batch: Sequence[Any]) -> None:
        started = time.monotonic()
        result = IngestResult()
        decoded = 0
        done = IngestProgress(self.offsets_table, batch)
        for partition, first in done.first_new.items():
            await self.holes.check(self.s.topic_events, partition, done.done[partition], first)
        max_ahead_s = self.s.max_event_ahead_s
        for event in batch:
            if done.replayed(event):
                continue
            ingest_message(result, event.message.key, event.value, source_of(event), max_ahead_s)
            if len(result.accepted) - decoded >= YIELD_EVERY:
                decoded = len(result.accepted)
                await asyncio.sleep(0)  # let heartbeats and fetches run
        # Relays carry the progress whose consequences are processed, never this batch's
        # own: the domain's Engine, too, judges a batch against the progress from before it.
        announcer = self.announcer
        out = BatchOutput(watermarks=announcer.announceable(), dead_letters=result.dead_letters)
        now = int(time.time())
        progress = announcer.seen
        route = self.router.route
        for i, (ev, src) in enumerate(result.accepted):
            out.event_rows.append(event_row(ev, src.partition, src.offset, now))
            t = to_us(ev.occurred_at)
            if t > progress.get(src.partition, NO_WATERMARK):
                progress[src.partition] = t
            route(out.relays, route_event(ev))
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        await self.checkpoint.commit(out, done.write)
        announcer.published(out.watermarks)
        self.sensor.on_ingest(
            len(batch),
            [ev for ev, _ in result.accepted],
            result.dead_letters,
            time.monotonic() - started,
        )


#: Events or messages handled between two yields to the event loop: Kafka heartbeats run on
#: the same loop, and a batch that held it for the session timeout would cost a rebalance.
YIELD_EVERY = 1000


def source_of(event: Any) -> Source:
    """Where a Faust event's message was read."""
    msg = event.message
    return Source(msg.topic, msg.partition, msg.offset, int((msg.timestamp or 0) * 1000))
