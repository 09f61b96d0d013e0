"""Reading changelogs back a take at a time: restores and standby replicas.

A table partition's changelog is read back in two cases: a worker that takes the partition
over restores it (active recovery), and a worker holding a standby replica follows it for
as long as it holds the replica (``SIYU_STANDBY_REPLICAS``, 1 by default). Faust's
``Recovery`` service takes those records from its queue one at a time, and each costs a
``wait_for`` (a task and a timer), a scan of every standby partition's remaining offsets and
several turns of the event loop. Following a changelog that way cost about as much CPU per
record as computing it (docs/performance.md).

:class:`TakeAtATimeRecovery` replaces only that loop. It takes every record waiting in the
queue at once and does, for each, what a record needs (skip it if its offset was seen,
track the offset, buffer it for its table, apply a table's buffer once it holds the
table's buffer size), and once per take what a wake-up needs (end active recovery when it
is done, mark the standbys ready). Rebalances, seeking, highwaters, and the flushes on
rebalance and stop stay Faust's; so does nothing of Kafka transactions, which siyu does not
use (it runs at least once, with idempotent writes). :class:`TableManager` is the app's table
manager with this recovery (``faust.App(TableManager=...)``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from time import monotonic
from typing import Any

import faust
from faust.tables.recovery import Recovery
from mode import Service

from pipeline.kafka.offsets import Partition

log = logging.getLogger(__name__)

#: Longest wait for a changelog record before checking whether recovery has ended (Faust's).
IDLE_S = 5.0


class TakeAtATimeRecovery(Recovery):
    """Faust's recovery, applying changelog records a take of the queue at a time."""

    @Service.task
    async def _slurp_changelogs(self) -> None:
        queue = self.tables.changelog_queue
        while not self.should_stop:
            self.signal_recovery_end.clear()
            try:
                first = await asyncio.wait_for(queue.get(), timeout=IDLE_S)
            except TimeoutError:
                if not self.should_stop:
                    self._end_active_recovery_if_done()
                continue
            take = [first]
            while not queue.empty():
                take.append(queue.get_nowait())
            try:
                await self._apply_take(take)
                self._end_active_recovery_if_done()
                self._mark_standbys_ready_if_done()
            except Exception:
                # As Faust's loop: a failed take is logged, recovery goes on with the next.
                log.exception("applying %d changelog records failed", len(take))

    async def _apply_take(self, take: Sequence[Any]) -> None:
        now = monotonic()
        actives = 0
        for event in take:
            message = event.message
            tp = message.tp
            if tp in self.active_tps:
                offsets = self.active_offsets
                self._active_events_received_at[tp] = now
                actives += 1
            elif tp in self.standby_tps:
                offsets = self.standby_offsets
                self._standby_events_received_at[tp] = now
            else:
                # Faust's loop went on with the previous record's table here.
                log.warning(
                    "skipped changelog record %s[%d]@%d: partition neither restored nor "
                    "followed by this worker",
                    tp.topic,
                    tp.partition,
                    message.offset,
                )
                continue
            seen = offsets.get(tp)
            if seen is not None and message.offset <= seen:
                continue
            offsets[tp] = message.offset
            table = self.tp_to_table[tp]
            buffer = self.buffers[table]
            buffer.append(event)
            await table.on_changelog_event(event)
            limit = (
                table.recovery_buffer_size
                if offsets is self.active_offsets
                else (table.standby_buffer_size)
            )
            if len(buffer) >= limit:
                table.apply_changelog_batch(buffer)
                buffer.clear()
                self._last_flush_at = now
        if actives:
            # Faust estimates the time a restore has left from per-record processing times.
            after = monotonic()
            last = self._last_active_event_processed_at
            if last is not None:
                times = self._processing_times
                times.extend([(after - last) / actives] * actives)
                while len(times) > self.num_samples_required_for_estimate:
                    times.popleft()
            self._last_active_event_processed_at = after

    async def _seek_offsets(
        self, consumer: Any, tps: set[Any], offsets: Counter[Any], title: str
    ) -> None:
        """Seek each changelog partition to where reading it starts: Faust's own, except
        that an offset Faust never learnt reads from the start as its -1 does, instead of
        crashing the worker.

        Faust gives a partition it adds with no persisted offset the offset None, and looks
        up the real one only for the partitions assigned in the current round; a rebalance
        in the middle of a recovery leaves a standby partition of an earlier round at None,
        and seeking it raised ``ValueError: Offset must be a positive integer`` (seen in a
        test that freezes one of two workers). Reading a changelog from its start is always
        right (its records are applied in order); it only takes longer.
        """
        unknown = sorted(
            f"{tp.topic}[{tp.partition}]"
            for tp in tps
            if not _known(offsets[tp]) and offsets[tp] != -1
        )
        if unknown:
            log.warning("%s changelog offsets not known, read from the start: %s", title, unknown)
        await consumer.seek_wait({tp: offsets[tp] if _known(offsets[tp]) else 0 for tp in tps})

    def _end_active_recovery_if_done(self) -> None:
        if self.in_recovery and not self.need_recovery():
            self.flush_buffers()  # what is left in the buffers goes into the stores first
            self._set_recovery_ended()
            if self._actives_span is not None:
                self._actives_span.set_tag("Actives-Ready", True)
            self.signal_recovery_end.set()

    def _mark_standbys_ready_if_done(self) -> None:
        if self._standbys_span is None and self.tables.standbys_ready:
            return
        if not self.standby_remaining_total():
            if self._standbys_span is not None:
                self._standbys_span.finish()
                self._standbys_span = None
            self.tables.on_standbys_ready()


def _known(offset: Any) -> bool:
    """Whether ``offset`` is one to seek to (-1, Faust's "none yet", is not)."""
    return isinstance(offset, int) and offset >= 0


def restore_positions(recovery: Recovery) -> dict[Partition, int]:
    """The next offset to restore of each changelog partition that ``recovery`` restores
    (Faust keeps the last offset restored: -1 or None for none yet, or absent before it
    has read where the restore starts)."""
    positions = {}
    for tp in list(recovery.active_tps):
        last = recovery.active_offsets.get(tp)
        positions[(tp.topic, tp.partition)] = 0 if last is None else last + 1
    return positions


class TableManager(faust.tables.TableManager):
    """Faust's table manager with :class:`TakeAtATimeRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = TakeAtATimeRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
