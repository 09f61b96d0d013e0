"""The Faust topology: agents that move messages to the pure domain core and results out.

Read top to bottom, the data path is::

    siyu.events ──ingest──▶ siyu.rows (events table)      bad input ──▶ siyu.dead-letters
                    │
                    └─▶ siyu.by-user / siyu.by-share ──state agents──▶ siyu.by-* (follow-ups)
                                                            └──────────▶ siyu.rows

Every message between agents is an *envelope*: the :class:`~pipeline.domain.Addressed`
messages of one batch for one partition, plus the sender's watermark. Partitions are chosen
here, by :func:`partition_for`, so a key's messages, its table entry and its changelog
record all live in the same partition number (Faust writes a table's changelog to the
partition of the event being processed; this module sets that event per partition).

Faust acknowledges a batch when the agent raises or is cancelled. So every batch is run to
completion (shielded from cancellation), its output is confirmed by Kafka before the batch
counts as done, and errors are handled inside: a message whose domain step raises is
dead-lettered with the error and its neighbours go on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust
import orjson

from pipeline import metrics
from pipeline.contract.deadletter import Source
from pipeline.contract.events import Reject, RejectReason
from pipeline.domain import (
    NO_WATERMARK,
    Addressed,
    DomainConfig,
    KeyedProcessor,
    ProcessorName,
    StepResult,
    build_processors,
    route_event,
    to_us,
)
from pipeline.domain.rows import Row as DomainRow
from pipeline.settings import Settings
from pipeline.sink.rows import (
    EVENTS,
    MAX_MESSAGE_BYTES,
    RowBatch,
    domain_row_batches,
    event_row,
    json_array_chunks,
)
from pipeline.worker.faust.tables import TableWrites, in_partition, partition_db
from pipeline.worker.ingest import DeadLetter, IngestResult, ingest_message
from pipeline.worker.watchdog import STALL_EXIT_CODE, OffsetReader, is_hole, skipped_input
from pipeline.worker.watermarks import ConfirmedProgress

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Events or messages handled between two yields to the event loop: Kafka heartbeats run on
#: the same loop, and a batch that held it for the session timeout would cost a rebalance.
_YIELD_EVERY = 1000
#: Seconds between polls of the by-* topics' committed and end offsets (watermarks.py).
_CONFIRM_EVERY_S = 0.5
#: A watermark key per partition lives in each state table beside the keys' states.
_WATERMARK_KEY = b"\x00watermark"
#: In that record: the last input offset of the partition that was fully processed.
_DONE_KEY = "done"


def table_key(brand_id: str, key: str) -> bytes:
    """A state table's key for ``(brand_id, key)``."""
    return f"{brand_id}\x1f{key}".encode()


def partition_of(table_key: bytes, partitions: int) -> int:
    """The partition that owns a state table key (CRC-32, stable across processes)."""
    return zlib.crc32(table_key) % partitions


def partition_for(brand_id: str, key: str, partitions: int) -> int:
    """The partition that owns ``(brand_id, key)``."""
    return partition_of(table_key(brand_id, key), partitions)


def domain_config(s: Settings) -> DomainConfig:
    """The domain rules' parameters from the settings."""
    return DomainConfig(
        attribution_window_s=s.attribution_window_s,
        allowed_lateness_s=s.allowed_lateness_s,
        koc_min_buyers=s.koc_min_buyers,
        koc_window_s=s.koc_window_s,
    )


def store_options(s: Settings) -> dict[str, Any] | None:
    """A table's store options: RocksDB's memory per partition database, bounded.

    Faust opens one RocksDB database per table partition, each with 64 MiB memtables (up to
    three) and a 2 GiB block cache of its own, so a worker with many partitions could grow
    to gigabytes that no setting of siyu's accounted for. A fresh dict per table: Faust's
    store takes options out of the dict it is given.
    """
    if s.store != "rocksdb":
        return None
    return {
        "write_buffer_size": s.rocksdb_write_buffer_mb << 20,
        "block_cache_size": s.rocksdb_block_cache_mb << 20,
    }


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
        log.critical(
            "a batch failed outside the per-message error handling; exiting "
            "without acknowledging it (restart the worker)",
            exc_info=True,
        )
        logging.shutdown()
        os._exit(70)


@dataclass
class Output:
    """What a batch produced: envelopes per (topic, partition), rows, dead letters."""

    #: Event-time progress per partition of the events topic (max µs seen there).
    watermarks: dict[int, int] = field(default_factory=dict)
    envelopes: dict[tuple[str, int], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    event_rows: list[list[Any]] = field(default_factory=list)
    domain_rows: list[DomainRow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: Each message a state agent stepped, and whether the step emitted rows (metrics).
    stepped: list[tuple[dict[str, Any], bool]] = field(default_factory=list)


class Topology:
    """Declares the topics, tables and agents on a Faust app, and publishes their output."""

    def __init__(self, app: faust.App, s: Settings) -> None:
        self.app = app
        self.s = s
        self.processors = build_processors(domain_config(s))

        def topic(name: str) -> Any:
            return app.topic(name, key_serializer="raw", value_serializer="raw")

        self.events_topic = topic(s.topic_events)
        self.rows_topic = topic(s.topic_rows)
        self.dead_topic = topic(s.topic_dead_letters)
        self.by_topic: dict[ProcessorName, Any] = {
            ProcessorName.USER: topic(s.topic_by_user),
            ProcessorName.SHARE: topic(s.topic_by_share),
            ProcessorName.SHARER: topic(s.topic_by_sharer),
        }
        self.topic_names = {name: t.get_topic_name() for name, t in self.by_topic.items()}
        self.tables = {
            name: app.Table(
                f"state-{name.value}",
                default=None,
                partitions=s.topic_partitions,
                key_type=bytes,  # bytes type -> "raw" codec: no Faust codec on the hot path
                value_type=bytes,
                options=store_options(s),
            )
            for name in self.processors
        }
        # Per partition of the events topic, the last offset whose output was confirmed.
        self.ingest_offsets = app.Table(
            "ingest-offsets",
            default=None,
            partitions=s.topic_partitions,
            key_type=bytes,
            value_type=bytes,
            options=store_options(s),
        )
        self.caches = {name: StateCache(s.state_cache_keys) for name in self.processors}
        app.on_partitions_revoked.connect(self._forget_states)
        app.on_partitions_assigned.connect(self._forget_states)
        # Per partition of each processor: the watermark at the last sweep of expired state.
        self._swept: dict[tuple[ProcessorName, int], int] = {}
        # Ingest's progress: per events-topic partition, the largest event time seen; the
        # part of it whose envelopes Kafka confirmed; and the part whose consequences all
        # agents have processed, which is what ingest announces (pipeline/worker/watermarks.py).
        self._ingest_progress: dict[int, int] = {}
        self._published_progress: dict[int, int] = {}
        self.confirmed = ConfirmedProgress(s.watermark_hops)
        self._read_offsets = OffsetReader(s.kafka_bootstrap, s.app_id)
        self._read_skipped = OffsetReader(s.kafka_bootstrap, s.app_id)  # one per caller
        self._announced: dict[int, int] = {}
        #: Batches whose publishing is failing and being retried (Kafka away): waiting for
        #: a reason, which the stall watchdog must not take for a stall.
        self.publish_retries = 0

    def _forget_states(self, *args: Any, **kwargs: Any) -> None:
        for cache in self.caches.values():
            cache.clear()

    # -- ingest ---------------------------------------------------------------------------

    def register(self) -> None:
        self.app.timer(_CONFIRM_EVERY_S, name="siyu.confirm-watermark")(self._confirm_watermark)
        self.app.agent(self.events_topic, name="siyu.ingest")(self._ingest_agent)
        for name in self.processors:
            self.app.agent(self.by_topic[name], name=f"siyu.state-{name.value}")(
                self._state_agent(name)
            )

    async def _ingest_agent(self, stream: Any) -> None:
        async for batch in stream.take_events(self.s.ingest_batch, within=self.s.ingest_window_s):
            await run_to_completion(self._in_parts(batch, self._ingest_batch))

    async def _in_parts(
        self, batch: Sequence[Any], handle: Callable[[Sequence[Any]], Awaitable[None]]
    ) -> None:
        """Handle ``batch`` in parts of at most ``SIYU_BATCH_MAX_BYTES`` of input, each
        published and written before the next. On a backlog a batch of envelopes can hold
        hundreds of thousands of events; in parts, a worker's memory does not grow with that.
        One task for all parts: Faust acknowledges the whole batch when the agent stops."""
        for part in split_batch(batch, self.s.batch_max_bytes, _input_size):
            await handle(part)

    async def _ingest_batch(self, batch: Sequence[Any]) -> None:
        started = time.monotonic()
        result = IngestResult()
        decoded = 0
        done = _Offsets(self.ingest_offsets, batch)
        for partition, first in done.first_new.items():
            await self._check_skipped(self.s.topic_events, partition, done.done[partition], first)
        for event in batch:
            if done.replayed(event):
                continue
            ingest_message(
                result, event.message.key, event.value, _source(event), self.s.max_event_ahead_s
            )
            if len(result.accepted) - decoded >= _YIELD_EVERY:
                decoded = len(result.accepted)
                await asyncio.sleep(0)  # let heartbeats and fetches run
        # Envelopes carry the progress whose consequences are processed, never this batch's
        # own: the domain's Engine, too, judges a batch against the progress from before it.
        out = Output(watermarks=dict(self.confirmed.confirmed), dead_letters=result.dead_letters)
        now = int(time.time())
        progress = self._ingest_progress
        for i, (ev, src) in enumerate(result.accepted):
            out.event_rows.append(event_row(ev, src.partition, src.offset, now))
            t = to_us(ev.occurred_at)
            if t > progress.get(src.partition, NO_WATERMARK):
                progress[src.partition] = t
            self._address(out, route_event(ev))
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)
        await self.commit(out, done.commit)
        self._published_progress = dict(progress)
        self._announced = out.watermarks
        metrics.record_ingest(len(batch), result, time.monotonic() - started)

    async def _confirm_watermark(self) -> None:
        """Advance the announced watermark as the by-* topics are processed (see
        pipeline/worker/watermarks.py), and tell every state partition when it moved: a partition
        no events reach would not hear of it otherwise, nor would any partition of the last
        events' progress."""
        s = self.s
        published = dict(self._published_progress)
        if not published:
            return
        partitions = [(t, p) for t in self.topic_names.values() for p in range(s.topic_partitions)]
        try:
            committed, ends = await asyncio.get_running_loop().run_in_executor(
                None, self._read_offsets, partitions
            )
        except Exception as err:  # no answer now: the watermark just waits
            log.debug("watermark confirmation skipped: %s", err)
            return
        confirmed = self.confirmed.observe(published, committed, ends)
        if confirmed == self._announced:
            return
        out = Output(watermarks=dict(confirmed))
        self._announced = out.watermarks
        head = b'{"wm":' + orjson.dumps({str(k): v for k, v in confirmed.items()}) + b',"m":[]}'
        try:
            await asyncio.gather(
                *[
                    await self.app.producer.send(topic, None, head, p, None, None)
                    for topic, p in partitions
                ]
            )
        except Exception as err:  # the next tick, or the next batch, carries it
            log.warning("announcing the watermark failed: %s", err)
            self._announced = {}

    def _address(self, out: Output, messages: Iterable[Addressed]) -> None:
        n = self.s.topic_partitions
        for m in messages:
            dest = (self.topic_names[m.processor], partition_for(m.brand_id, m.key, n))
            out.envelopes[dest].append(m.to_dict())

    # -- state agents ---------------------------------------------------------------------

    def _state_agent(self, name: ProcessorName) -> Any:
        async def agent(stream: Any) -> None:
            async for batch in stream.take_events(
                self.s.processor_batch, within=self.s.processor_window_s
            ):
                await run_to_completion(
                    self._in_parts(batch, lambda part: self._state_batch(name, part))
                )

        return agent

    async def _state_batch(self, name: ProcessorName, batch: Sequence[Any]) -> None:
        started = time.monotonic()
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for event in batch:
            by_partition[event.message.partition].append(event)
        out = Output()
        updates = [
            await self._apply_partition(name, partition, events, out)
            for partition, events in by_partition.items()
        ]

        def write(writes: TableWrites) -> None:
            for update in updates:
                update.commit(writes)

        await self.commit(out, write)
        seconds = time.monotonic() - started
        metrics.record_state(name.value, out.stepped, out.domain_rows, out.dead_letters, seconds)
        for update in updates:
            if update.sweep_at is not None:
                await self._sweep(
                    name, update.batch.event.message.partition, update.sweep_at, update.batch.event
                )

    async def _apply_partition(
        self, name: ProcessorName, partition: int, events: list[Any], out: Output
    ) -> _PartitionUpdate:
        # Every table read of this partition's steps goes to this partition's store.
        with in_partition(events[-1]):
            return await self._apply_in_partition(name, partition, events, out)

    async def _apply_in_partition(
        self, name: ProcessorName, partition: int, events: list[Any], out: Output
    ) -> _PartitionUpdate:
        processor = self.processors[name]
        table = self.tables[name]
        wm_key = _WATERMARK_KEY + b":%d" % partition
        stored = table.get(wm_key)
        record = orjson.loads(stored) if stored is not None else {}
        # The last input offset of this partition whose output was confirmed: input at or
        # below it is a replay (offsets reset, or redelivered after a rebalance) and skipped.
        done_upto: int = record.pop(_DONE_KEY, -1)
        first = next((e.message.offset for e in events if e.message.offset > done_upto), None)
        if first is not None:
            await self._check_skipped(self.topic_names[name], partition, done_upto, first)
        progress: dict[int, int] = {int(k): v for k, v in record.items()}
        batch = _KeyBatch(processor, table, events[-1], self.caches[name])
        steps = 0
        for event in events:
            if event.message.offset <= done_upto:
                continue
            done_upto = event.message.offset
            try:
                envelope = orjson.loads(event.value)
                marks = {int(k): int(v) for k, v in envelope["wm"].items()}
                items = envelope["m"]
                if not isinstance(items, list):
                    raise TypeError(f"messages must be a list, got {type(items).__name__}")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
                # Whole, or not at all: a dead-lettered envelope moves no watermark either.
                self._dead_letter(out, event.value, None, _source(event), err)
                continue
            for k, v in marks.items():
                if v > progress.get(k, NO_WATERMARK):
                    progress[k] = v
            watermark = self.watermark(progress)
            steps += len(items)
            if steps >= _YIELD_EVERY:
                steps = 0
                await asyncio.sleep(0)  # a long batch must not starve heartbeats
            for index, item in enumerate(items):
                try:
                    result = batch.step(Addressed.from_dict(item), watermark)
                except Exception as err:  # one bad message must not stop the others
                    log.exception("state step %s failed on %s", name.value, item)
                    self._dead_letter(out, orjson.dumps(item), index, _source(event), err)
                    continue
                self._address(out, result.messages)
                out.domain_rows.extend(result.rows)
                out.stepped.append((item, bool(result.rows)))
        watermark = self.watermark(progress)
        sweep_due = watermark - self._swept.get((name, partition), NO_WATERMARK) >= (
            self.s.sweep_every_s * 1_000_000
        )
        for k, v in progress.items():
            if v > out.watermarks.get(k, NO_WATERMARK):
                out.watermarks[k] = v
        record = {str(k): v for k, v in sorted(progress.items())}
        record[_DONE_KEY] = done_upto
        encoded = orjson.dumps(record)
        return _PartitionUpdate(
            batch, wm_key, None if encoded == stored else encoded, watermark if sweep_due else None
        )

    async def _check_skipped(self, topic: str, partition: int, done: int, first: int) -> None:
        """Input between offset ``done``, the last processed, and ``first``, the first one
        given now, must not be skipped silently (:func:`pipeline.worker.watchdog.skipped_input`).
        A hole the consumer left stops the worker before this batch is acknowledged, so
        that a restart reads it from the committed offset; one left by retention or by a
        moved committed offset is logged, and the worker goes on."""
        if not is_hole(done, first):
            return
        tp = (topic, partition)
        reader = self._read_skipped
        committed: int | None = None
        start = 0
        verdict: str | None
        try:
            committed, start = await asyncio.get_running_loop().run_in_executor(
                None, lambda: (reader([tp])[0][tp], reader.starts([tp])[tp])
            )
        except Exception as err:  # no answer: a restart is the side that loses nothing
            log.warning("could not read the offsets of %s[%d]: %s", topic, partition, err)
            verdict = "undelivered"
        else:
            verdict = skipped_input(done, first, committed, start)
        missing = f"{topic}[{partition}] offsets {max(done + 1, start)}..{first - 1}"
        if verdict == "deleted":
            log.error("%s were deleted (retention) before they were processed: lost", missing)
        elif verdict == "moved":
            log.warning(
                "%s skipped: the group's committed offset was moved past them, to %s",
                missing,
                committed,
            )
        else:
            log.critical(
                "the Kafka consumer did not deliver %s (the last processed was %d, the next "
                "given is %d); exiting with %d so that a restart reads them from the "
                "committed offset (%s)",
                missing,
                done,
                first,
                STALL_EXIT_CODE,
                "unknown" if committed is None else committed,
            )
            logging.shutdown()
            os._exit(STALL_EXIT_CODE)

    def watermark(self, progress: dict[int, int]) -> int:
        """The event-time watermark (µs): the least progress over *every* partition of the
        events topic. A partition nothing was heard from yet holds it back, so a backlog
        replayed one partition at a time does not make the other partitions' events late.
        """
        return min(progress.get(p, NO_WATERMARK) for p in range(self.s.topic_partitions))

    async def _sweep(self, name: ProcessorName, partition: int, watermark: int, event: Any) -> None:
        """Expire old history of every key of ``partition``, including keys restored by
        recovery that no message has touched since (event time, not wall time).

        A sweep may touch every key of the partition, so it runs in chunks of
        ``SIYU_SWEEP_CHUNK`` keys, each published and written like a batch (output first,
        then states): its memory is one chunk's, not the whole partition's states twice.
        It runs after the batch that found it due committed, before that batch is
        acknowledged; a crash in between sweeps again (expiry is idempotent).
        """
        table = self.tables[name]
        keys = self._partition_keys(table, partition, event)
        chunk = self.s.sweep_chunk
        for start in range(0, len(keys), chunk):
            started = time.monotonic()
            out = Output()
            batch = _KeyBatch(self.processors[name], table, event, self.caches[name])
            with in_partition(event):
                for key in keys[start : start + chunk]:
                    result = batch.expire(key, watermark)
                    self._address(out, result.messages)
                    out.domain_rows.extend(result.rows)
            await self.commit(out, batch.write_back)
            seconds = time.monotonic() - started
            metrics.record_state(name.value, [], out.domain_rows, out.dead_letters, seconds)
        self._swept[(name, partition)] = watermark
        log.info(
            "swept %d keys of state-%s[%d] in %d chunk(s)",
            len(keys),
            name.value,
            partition,
            -(-len(keys) // chunk),
        )

    def _partition_keys(self, table: Any, partition: int, event: Any) -> list[bytes]:
        """The state keys of one partition of ``table``: read from that partition's RocksDB
        alone, or filtered from the whole memory store (which is not split by partition)."""
        db = partition_db(table.data, partition)
        if db is not None:
            offset_key = table.data.offset_key
            keys = db.keys()  # a rocksdict Rdict: its key iterator
            return [k for k in keys if not k.startswith(b"\x00") and k != offset_key]
        n = self.s.topic_partitions
        with in_partition(event):
            return [
                k for k in table if not k.startswith(b"\x00") and partition_of(k, n) == partition
            ]

    def _dead_letter(
        self, out: Output, payload: bytes, index: int | None, source: Source, err: BaseException
    ) -> None:
        reject = Reject(
            RejectReason.PROCESSING_ERROR, f"{type(err).__name__}: {err}", payload, index
        )
        out.dead_letters.append(DeadLetter.of(None, reject, source))

    # -- output ---------------------------------------------------------------------------

    async def publish(self, out: Output) -> None:
        """Send a batch's output and wait until Kafka confirmed all of it (acks=all).

        On failure the whole output is sent again: downstream steps and tables are
        idempotent, so a duplicate is harmless, while acknowledging unsent output would
        lose it.
        """
        max_rows = self.s.sink_max_rows
        row_messages = RowBatch(EVENTS.name, EVENTS.columns, out.event_rows).encode_chunks(max_rows)
        for batch in domain_row_batches(out.domain_rows):
            row_messages += batch.encode_chunks(max_rows)
        head = b'{"wm":' + orjson.dumps({str(k): v for k, v in out.watermarks.items()})
        envelopes = [
            (topic, partition, value)
            for (topic, partition), items in out.envelopes.items()
            for value in json_array_chunks(
                head + b',"m":[',
                (orjson.dumps(i) for i in items),
                b"]}",
                10_000,
                MAX_MESSAGE_BYTES,
            )
        ]

        async def send() -> None:
            futures: list[Any] = []
            for topic, partition, value in envelopes:
                futures.append(
                    await self.app.producer.send(topic, None, value, partition, None, None)
                )
            for value in row_messages:
                futures.append(await self.rows_topic.send(value=value))
            for dl in out.dead_letters:
                futures.append(
                    await self.dead_topic.send(key=dl.key, value=dl.value, headers=dl.headers)
                )
            await asyncio.gather(*futures)

        await self._until_sent("publishing a batch", send)

    async def commit(self, out: Output, write: Callable[[TableWrites], None]) -> None:
        """Make a batch's effects durable, in the one order that loses nothing: its output
        confirmed by Kafka first, then its table writes (``write`` collects them).

        A crash before the states are written re-delivers the input, which recomputes the
        same output from the old state (downstream is idempotent); the other order could
        lose that output.
        """
        await self.publish(out)
        writes = TableWrites()
        write(writes)
        await self.write_tables(writes)

    async def write_tables(self, writes: TableWrites) -> None:
        """Send a batch's table writes to the changelogs, wait until Kafka confirmed them,
        then put them into the stores (pipeline/worker/faust/tables.py)."""
        if len(writes):
            # The aiokafka producer under Faust's (faust-streaming's aiokafka driver).
            faust_producer: Any = self.app.producer
            producer = faust_producer._ensure_producer()
            await self._until_sent("writing table changelogs", lambda: writes.send(producer))
            writes.apply()

    async def _until_sent(self, what: str, send: Callable[[], Awaitable[None]]) -> None:
        """Run ``send`` until it succeeds, backing off between attempts.

        The batch is not acknowledged meanwhile: acknowledging input whose output or state
        was not confirmed would lose it, and sending again is harmless (downstream steps and
        tables are idempotent). While this retries, :attr:`publish_retries` tells the stall
        watchdog that the worker is waiting for Kafka, not stuck.
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


class StateCache:
    """Deserialised states of the keys this worker owns, kept between batches: at most
    ``max_keys`` of them, the least recently used dropped first.

    Parsing a state from its table bytes on every batch was a quarter of a worker's time,
    most of it on busy keys. The table (and its changelog) stays the source of truth: the
    cache holds what was last written there (or that state with a later watermark, when a
    sweep found nothing else to change), and is dropped whenever partitions move, because
    Faust may then restore the table from the changelog. A key dropped for room is parsed
    from the table again when it comes back, so the bound costs time, never correctness;
    without it, a worker's memory grows with every user it ever saw, even when the table
    lives in RocksDB on disk.
    """

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self.states: OrderedDict[bytes, Any] = OrderedDict()

    def take(self, key: bytes) -> Any:
        """The cached state of ``key``, or :data:`MISSING`. The object is handed over: the
        caller may mutate it and must :meth:`put` the result back."""
        return self.states.get(key, MISSING)

    def put(self, key: bytes, state: Any) -> None:
        """Cache ``state`` as the latest of ``key`` (None: the key was deleted)."""
        if state is None:
            self.states.pop(key, None)
            return
        self.states[key] = state
        self.states.move_to_end(key)

    def trim(self) -> int:
        """Drop the least recently used states beyond the bound; returns how many."""
        excess = len(self.states) - self.max_keys
        for _ in range(excess):
            self.states.popitem(last=False)
        return max(0, excess)

    def clear(self) -> None:
        self.states.clear()


#: :meth:`StateCache.take` of a key that is not cached.
MISSING: Any = object()


class _KeyBatch:
    """The states one batch touches: each read once, stepped many times, written once.

    Coalescing the writes is what keeps table (changelog) cost per key per batch, not per
    message. If a step raises, the key's state is rebuilt from the table and the messages
    that succeeded before, so a half-applied step never reaches the table.
    """

    def __init__(
        self, processor: KeyedProcessor, table: Any, event: Any, cache: StateCache
    ) -> None:
        self.processor = processor
        self.table = table
        self.event = event  # any event of the partition: Faust routes table I/O by it
        self.cache = cache
        self.states: dict[bytes, Any] = {}
        self.applied: dict[bytes, list[tuple[Addressed, int]]] = defaultdict(list)
        #: Keys expired with nothing but their watermark changed: nothing to write.
        self.quiet: set[bytes] = set()
        #: Keys whose state was parsed from the table by this batch (not in the cache).
        self.loaded: set[bytes] = set()

    def _stored(self, key: bytes) -> Any:
        raw = self.table.get(key)  # within _apply_partition's in_partition
        return None if raw is None else self.processor.state_from_dict(orjson.loads(raw))

    def _load(self, key: bytes) -> Any:
        if key in self.states:
            return self.states[key]
        # Steps may mutate the state they are given: the cached object is handed over and
        # the cache entry is replaced at commit.
        state = self.cache.take(key)
        if state is MISSING:
            self.loaded.add(key)
            state = self._stored(key)
        self.states[key] = state
        return state

    def step(self, addressed: Addressed, watermark: int) -> StepResult[Any]:
        key = table_key(addressed.brand_id, addressed.key)
        try:
            result = self.processor.step(self._load(key), addressed.message, watermark)
        except Exception:
            # The step may have half-mutated the state: rebuild it from the table (not written
            # before the batch commits) and the messages applied before, then re-raise.
            state = self._stored(key)
            for earlier, earlier_watermark in self.applied.get(key, []):
                state = self.processor.step(state, earlier.message, earlier_watermark).state
            self.states[key] = state
            raise
        self.states[key] = result.state
        self.applied[key].append((addressed, watermark))
        return result

    def expire(self, key: bytes, watermark: int) -> StepResult[Any]:
        state = self._load(key)
        if state is None:
            return StepResult(None, [], [])
        result = self.processor.expire(state, watermark)
        self.states[key] = result.state
        if not result.changed and result.state is not None:
            self.quiet.add(key)
        return result

    def write_back(self, writes: TableWrites) -> None:
        with in_partition(self.event):
            self._write_back(writes)

    def _write_back(self, writes: TableWrites) -> None:
        cache = self.cache
        for key, state in self.states.items():
            swept_only = key not in self.applied
            # A key that only a sweep read from the table is not cached: a sweep reads every
            # key of the partition and must not push the busy ones out of the cache.
            if not (swept_only and key in self.loaded):
                cache.put(key, state)
            if swept_only and key in self.quiet:
                # Only the watermark moved: the stored state, advanced to the same
                # watermark, is this one, so there is nothing to write. Any other key
                # changed (``expire`` says so exactly), so it is written without comparing.
                continue
            if state is None:
                if self.table.get(key) is not None:
                    writes.set(self.table, self.event, key, None)
                continue
            writes.set(
                self.table, self.event, key, orjson.dumps(self.processor.state_to_dict(state))
            )
        # Lookups of the keys messages were stepped on: a sweep reads every key of the
        # partition, cached or not, and would drown what the cache's hit rate says.
        misses = sum(1 for key in self.applied if key in self.loaded)
        metrics.record_state_cache(
            self.processor.name.value, len(self.applied), misses, cache.trim()
        )


@dataclass
class _PartitionUpdate:
    """The table writes of one partition's batch, held back until its output is confirmed."""

    batch: _KeyBatch
    watermark_key: bytes
    watermark_value: bytes | None
    #: The watermark to sweep the partition's expired state at, once this is committed.
    sweep_at: int | None

    def commit(self, writes: TableWrites) -> None:
        self.batch.write_back(writes)
        if self.watermark_value is not None:
            writes.set(self.batch.table, self.batch.event, self.watermark_key, self.watermark_value)


class _Offsets:
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

    def commit(self, writes: TableWrites) -> None:
        if self.skipped:
            log.info("skipped %d replayed messages (processed before)", self.skipped)
        for partition, event in self.last.items():
            if event.message.offset > self.done[partition]:
                writes.set(self.table, event, b"%d" % partition, b"%d" % event.message.offset)


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


def _source(event: Any) -> Source:
    msg = event.message
    return Source(msg.topic, msg.partition, msg.offset, int((msg.timestamp or 0) * 1000))


def register(app: faust.App, s: Settings) -> Topology:
    """Declare the topics, tables and agents of the pipeline on ``app``."""
    topology = Topology(app, s)
    topology.register()
    return topology
