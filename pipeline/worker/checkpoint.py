"""The one owner of the durable order: how a batch's effects become durable, and when its
input may be acknowledged.

For every batch (or part of one), :meth:`Checkpoint.commit` does, in this order:

1. **publish**: send the batch's relays, row batches and dead letters;
2. **Kafka confirms** them (``acks=all``), retried until it does;
3. **write tables**: send the batch's state-table writes to their changelogs as record
   batches, wait until Kafka confirmed them, then put them into the stores;
4. **acknowledge**: the agent returns from the batch and Faust acknowledges its input (its
   offsets are committed at the next commit interval).

A crash before 2 re-delivers the input, which recomputes the same output from the same
state; a crash between 2 and 3 re-delivers it against the old state, which again gives the
same output (downstream steps and tables are idempotent, so the duplicate is harmless); a
crash between 3 and 4 re-delivers input whose offsets the tables record as done, and the
agents skip it. The other order (state first) could lose output. Faust acknowledges a batch
when its agent raises or is cancelled, so a batch runs to completion
(:func:`run_to_completion`) and nothing escapes it but a bug, which ends the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pipeline.contract.deadletter import DeadLetter
from pipeline.contract.events import AnyEvent
from pipeline.domain import Row
from pipeline.settings import Settings
from pipeline.sink.rows import EVENTS, RowBatch, Values, domain_row_batches
from pipeline.worker.faust.tables import TableWrites
from pipeline.worker.relay import Relays, encode_relays, new_relays
from pipeline.worker.watchdog import ExitCode, exit_now

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class BatchOutput:
    """What a batch produced, to be made durable by :meth:`Checkpoint.commit`."""

    #: Event-time progress per partition of the events topic (µs), carried by every relay.
    watermarks: dict[int, int] = field(default_factory=dict)
    relays: Relays = field(default_factory=new_relays)
    event_rows: list[Values] = field(default_factory=list)
    domain_rows: list[Row] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: Each event a state agent stepped, and whether the step emitted rows (for the sensor).
    stepped: list[tuple[AnyEvent, bool]] = field(default_factory=list)


class Checkpoint:
    """Makes batches durable in the one order that loses nothing (see the module)."""

    def __init__(self, app: Any, s: Settings, rows_topic: Any, dead_topic: Any) -> None:
        self.app = app
        self.max_rows = s.sink_max_rows
        self.rows_topic = rows_topic
        self.dead_topic = dead_topic
        #: Batches whose sending is failing and being retried (Kafka away): waiting for a
        #: reason, which the stall watchdog must not take for a stall.
        self.publish_retries = 0

    async def commit(self, out: BatchOutput, write: Callable[[TableWrites], None]) -> None:
        """Steps 1-3 for ``out``; ``write`` collects the batch's table writes (step 3).
        When this returns, the caller may let its input be acknowledged (step 4)."""
        await self.publish(out)  # 1, 2
        writes = TableWrites()
        write(writes)
        await self.write_tables(writes)  # 3

    async def publish(self, out: BatchOutput) -> None:
        """Send a batch's output and wait until Kafka confirmed all of it (acks=all).

        On failure the whole output is sent again: downstream steps and tables are
        idempotent, so a duplicate is harmless, while acknowledging unsent output would
        lose it.
        """
        max_rows = self.max_rows
        row_messages = RowBatch(EVENTS.name, EVENTS.columns, out.event_rows).encode_chunks(max_rows)
        for batch in domain_row_batches(out.domain_rows):
            row_messages += batch.encode_chunks(max_rows)
        relays = encode_relays(out.watermarks, out.relays)
        producer = self.app.producer

        async def send() -> None:
            futures: list[Any] = []
            for topic, partition, value in relays:
                futures.append(await producer.send(topic, None, value, partition, None, None))
            for value in row_messages:
                futures.append(await self.rows_topic.send(value=value))
            for dl in out.dead_letters:
                futures.append(
                    await self.dead_topic.send(key=dl.key, value=dl.value, headers=dl.headers)
                )
            await asyncio.gather(*futures)

        await self.until_sent("publishing a batch", send)

    async def write_tables(self, writes: TableWrites) -> None:
        """Send a batch's table writes to the changelogs, wait until Kafka confirmed them,
        then put them into the stores (:mod:`pipeline.worker.faust.tables`)."""
        if len(writes):
            # The aiokafka producer under Faust's (faust-streaming's aiokafka driver).
            faust_producer: Any = self.app.producer
            producer = faust_producer._ensure_producer()
            await self.until_sent("writing table changelogs", lambda: writes.send(producer))
            writes.apply()

    async def until_sent(self, what: str, send: Callable[[], Awaitable[None]]) -> None:
        """Run ``send`` until it succeeds, backing off between attempts.

        The batch is not acknowledged meanwhile: acknowledging input whose output or state
        was not confirmed would lose it, and sending again is harmless. While this retries,
        :attr:`publish_retries` tells the stall watchdog that the worker is waiting for
        Kafka, not stuck.
        """
        attempt = 0
        while True:
            try:
                await send()
                if attempt:
                    self.publish_retries -= 1
                return
            except Exception as err:
                if attempt == 0:
                    self.publish_retries += 1
                attempt += 1
                delay = min(30.0, 0.5 * 2**attempt)
                log.warning("%s failed (%s); retry %d in %.1fs", what, err, attempt, delay)
                await asyncio.sleep(delay)


async def run_batches(
    stream: Any,
    size: int,
    within_s: float,
    max_bytes: int,
    handle: Callable[[Sequence[Any]], Awaitable[None]],
) -> None:
    """An agent's loop: take up to ``size`` events of ``stream`` or what ``within_s`` seconds
    bring, and ``handle`` them in parts of at most ``max_bytes`` of input, the whole batch run
    to completion before Faust may acknowledge it."""
    async for batch in stream.take_events(size, within=within_s):
        await run_to_completion(in_parts(batch, max_bytes, handle))


async def run_to_completion(work: Awaitable[None]) -> None:
    """Await ``work``; if cancelled meanwhile, finish it first, then re-raise.

    Faust acks the events of a batch when the agent is cancelled or raises; finishing the
    batch before that keeps "acknowledged" meaning "done". Errors of single messages are
    handled inside a batch; anything that escapes is a bug that leaves the batch half done,
    so the process exits at once without acknowledging it (crash-only): a restarted worker
    re-reads the batch from the last committed offset.
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
    except Exception:
        exit_now(
            ExitCode.BUG,
            "a batch failed outside the per-message error handling; exiting "
            "without acknowledging it (restart the worker)",
            exc_info=True,
        )


async def in_parts(
    batch: Sequence[Any], max_bytes: int, handle: Callable[[Sequence[Any]], Awaitable[None]]
) -> None:
    """Handle ``batch`` in parts of at most ``max_bytes`` of input (``SIYU_BATCH_MAX_BYTES``),
    each committed before the next. On a backlog a batch of envelopes can hold hundreds of
    thousands of events; in parts, a worker's memory does not grow with that. One task for
    all parts: Faust acknowledges the whole batch when the agent stops."""
    for part in split_batch(batch, max_bytes, _input_size):
        await handle(part)


def split_batch(batch: Sequence[T], max_bytes: int, size: Callable[[T], int]) -> list[Sequence[T]]:
    """``batch`` cut, in order, into parts of at most ``max_bytes`` by ``size``; an item
    larger than that on its own is a part of its own. Never an empty part."""
    parts: list[Sequence[T]] = []
    start, total = 0, 0
    for i, item in enumerate(batch):
        n = size(item)
        if i > start and total + n > max_bytes:
            parts.append(batch[start:i])
            start, total = i, 0
        total += n
    if start < len(batch):
        parts.append(batch[start:] if start else batch)
    return parts


def _input_size(event: Any) -> int:
    value = event.message.value
    return len(value) if value is not None else 0
