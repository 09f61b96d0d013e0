"""A state agent: one processor of the domain core, run on its ``by-*`` topic.

Per batch (or part of one), per partition: each relay is decoded, its messages are stepped
through the processor against their keys' states (read once, stepped many times, written
once: :class:`KeyBatch`), and the outcome — relays to other keys, rows, dead letters, and the
partition's new states and watermark record — is made durable by the
:class:`~pipeline.worker.checkpoint.Checkpoint`. A message whose step raises is dead-lettered
with the error, and its neighbours go on. Expired history is swept out of every key of a
partition as its event-time watermark advances (:meth:`StateAgent.sweep`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.contract.deadletter import DeadLetter, Source
from pipeline.contract.events import Reject, RejectReason, is_event
from pipeline.contract.partitioning import partition_of, state_key
from pipeline.domain import NO_WATERMARK, Addressed, KeyedProcessor, ProcessorName, StepResult
from pipeline.settings import Settings
from pipeline.worker.checkpoint import BatchOutput, Checkpoint, run_batches
from pipeline.worker.faust.tables import TableWrites, in_partition, partition_db
from pipeline.worker.ingest import YIELD_EVERY, source_of
from pipeline.worker.relay import BAD_RELAY, Router, decode_relay
from pipeline.worker.sensor import Sensor
from pipeline.worker.watchdog import HoleCheck
from pipeline.worker.watermarks import watermark_of

log = logging.getLogger(__name__)

#: A watermark key per partition lives in each state table beside the keys' states.
WATERMARK_KEY = b"\x00watermark"
#: In that record: the last input offset of the partition that was fully processed.
_DONE_KEY = "done"


class StateAgent:
    """Runs ``processor`` on its topic, with its state in ``table``."""

    def __init__(
        self,
        s: Settings,
        processor: KeyedProcessor,
        topic: str,
        table: Any,
        checkpoint: Checkpoint,
        router: Router,
        holes: HoleCheck,
        sensor: Sensor,
    ) -> None:
        self.s = s
        self.processor = processor
        self.name = processor.name
        self.topic = topic
        self.table = table
        self.checkpoint = checkpoint
        self.router = router
        self.holes = holes
        self.sensor = sensor
        self.cache = StateCache(s.state_cache_keys)
        #: Per partition: the watermark at the last sweep of expired state.
        self._swept: dict[int, int] = {}

    async def run(self, stream: Any) -> None:
        """The agent: the processor's stream, a batch at a time."""
        s = self.s
        await run_batches(
            stream, s.processor_batch, s.processor_window_s, s.batch_max_bytes, self.state_batch
        )

    async def state_batch(self, batch: Sequence[Any]) -> None:
        started = time.monotonic()
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for event in batch:
            by_partition[event.message.partition].append(event)
        out = BatchOutput()
        updates = []
        for partition, events in by_partition.items():
            # Every table read of this partition's steps goes to this partition's store.
            with in_partition(events[-1]):
                updates.append(await self._apply(partition, events, out))

        def write(writes: TableWrites) -> None:
            for update in updates:
                update.write(writes)

        await self.checkpoint.commit(out, write)
        self._report(out, time.monotonic() - started)
        for update in updates:
            if update.sweep_at is not None:
                await self.sweep(update.batch.event, update.sweep_at)

    def _report(self, out: BatchOutput, seconds: float) -> None:
        if out.stepped:
            # The user processor emits a loyalty snapshot for every event new to it
            # (docs/domain.md), so a step of an event that emitted nothing was a duplicate.
            applied = [ev for ev, emitted in out.stepped if emitted]
            duplicates = [ev for ev, emitted in out.stepped if not emitted]
            self.sensor.on_events_applied(applied, duplicates)
        self.sensor.on_state_batch(self.name.value, out.domain_rows, out.dead_letters, seconds)

    async def _apply(self, partition: int, events: list[Any], out: BatchOutput) -> PartitionUpdate:
        table = self.table
        wm_key = WATERMARK_KEY + b":%d" % partition
        stored = table.get(wm_key)
        record = orjson.loads(stored) if stored is not None else {}
        # The last input offset of this partition whose output was confirmed: input at or
        # below it is a replay (offsets reset, or redelivered after a rebalance) and skipped.
        done_upto: int = record.pop(_DONE_KEY, -1)
        first = next((e.message.offset for e in events if e.message.offset > done_upto), None)
        if first is not None:
            await self.holes.check(self.topic, partition, done_upto, first)
        progress: dict[int, int] = {int(k): v for k, v in record.items()}
        batch = KeyBatch(self.processor, table, events[-1], self.cache, self.sensor)
        partitions = self.s.topic_partitions
        # Only the user processor receives events, each once per delivery: the sensor
        # counts them there.
        counts_events = self.name is ProcessorName.USER
        route = self.router.route
        steps = 0
        for event in events:
            if event.message.offset <= done_upto:
                continue
            done_upto = event.message.offset
            try:
                marks, items = decode_relay(event.value)
            except BAD_RELAY as err:
                # Whole, or not at all: a dead-lettered relay moves no watermark either.
                out.dead_letters.append(_dead_letter(event.value, None, source_of(event), err))
                continue
            for k, v in marks.items():
                if v > progress.get(k, NO_WATERMARK):
                    progress[k] = v
            watermark = watermark_of(progress, partitions)
            steps += len(items)
            if steps >= YIELD_EVERY:
                steps = 0
                await asyncio.sleep(0)  # a long batch must not starve heartbeats
            for index, item in enumerate(items):
                try:
                    addressed = Addressed.from_dict(item)
                    result = batch.step(addressed, watermark)
                except Exception as err:  # one bad message must not stop the others
                    log.exception("state step %s failed on %s", self.name.value, item)
                    out.dead_letters.append(
                        _dead_letter(orjson.dumps(item), index, source_of(event), err)
                    )
                    continue
                route(out.relays, result.messages)
                out.domain_rows.extend(result.rows)
                if counts_events and is_event(addressed.message):
                    out.stepped.append((addressed.message, bool(result.rows)))
        watermark = watermark_of(progress, partitions)
        sweep_due = watermark - self._swept.get(partition, NO_WATERMARK) >= (
            self.s.sweep_every_s * 1_000_000
        )
        for k, v in progress.items():
            if v > out.watermarks.get(k, NO_WATERMARK):
                out.watermarks[k] = v
        record = {str(k): v for k, v in sorted(progress.items())}
        record[_DONE_KEY] = done_upto
        encoded = orjson.dumps(record)
        return PartitionUpdate(
            batch, wm_key, None if encoded == stored else encoded, watermark if sweep_due else None
        )

    async def sweep(self, event: Any, watermark: int) -> None:
        """Expire old history of every key of ``event``'s partition, including keys restored
        by recovery that no message has touched since (event time, not wall time).

        A sweep may touch every key of the partition, so it runs in chunks of
        ``SIYU_SWEEP_CHUNK`` keys, each committed like a batch (output first, then states):
        its memory is one chunk's, not the whole partition's states twice. It runs after
        the batch that found it due committed, before that batch is acknowledged; a crash in
        between sweeps again (expiry is idempotent).
        """
        partition = event.message.partition
        keys = self._partition_keys(partition, event)
        chunk = self.s.sweep_chunk
        for start in range(0, len(keys), chunk):
            started = time.monotonic()
            out = BatchOutput()
            batch = KeyBatch(self.processor, self.table, event, self.cache, self.sensor)
            with in_partition(event):
                for key in keys[start : start + chunk]:
                    result = batch.expire(key, watermark)
                    self.router.route(out.relays, result.messages)
                    out.domain_rows.extend(result.rows)
            await self.checkpoint.commit(out, batch.write_back)
            self._report(out, time.monotonic() - started)
        self._swept[partition] = watermark
        log.info(
            "swept %d keys of state-%s[%d] in %d chunk(s)",
            len(keys),
            self.name.value,
            partition,
            -(-len(keys) // chunk),
        )

    def _partition_keys(self, partition: int, event: Any) -> list[bytes]:
        """The state keys of one partition of the table: read from that partition's RocksDB
        alone, or filtered from the whole memory store (which is not split by partition)."""
        table = self.table
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
    payload: bytes, index: int | None, source: Source, err: BaseException
) -> DeadLetter:
    reject = Reject(RejectReason.PROCESSING_ERROR, f"{type(err).__name__}: {err}", payload, index)
    return DeadLetter.of(None, reject, source)


class StateCache:
    """Deserialised states of the keys this worker owns, kept between batches: at most
    ``max_keys`` of them, the least recently used dropped first.

    Parsing a state from its table bytes on every batch was a large share of a worker's
    time, most of it on busy keys (docs/performance.md). The table (and its changelog) stays
    the source of truth: the cache holds what was last written there (or that state with a
    later watermark, when a sweep found nothing else to change), and is dropped whenever
    partitions move, because Faust may then restore the table from the changelog. A key
    dropped for room is parsed from the table again when it comes back, so the bound costs
    time, never correctness; without it, a worker's memory grows with every user it ever
    saw, even when the table lives in RocksDB on disk.
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


class KeyBatch:
    """The states one batch touches: each read once, stepped many times, written once.

    Coalescing the writes is what keeps table (changelog) cost per key per batch, not per
    message. If a step raises, the key's state is rebuilt from the table and the messages
    that succeeded before, so a half-applied step never reaches the table.
    """

    def __init__(
        self,
        processor: KeyedProcessor,
        table: Any,
        event: Any,
        cache: StateCache,
        sensor: Sensor,
    ) -> None:
        self.processor = processor
        self.table = table
        self.event = event  # any event of the partition: Faust routes table I/O by it
        self.cache = cache
        self.sensor = sensor
        self.states: dict[bytes, Any] = {}
        self.applied: dict[bytes, list[tuple[Addressed, int]]] = defaultdict(list)
        #: Keys expired with nothing but their watermark changed: nothing to write.
        self.quiet: set[bytes] = set()
        #: Keys whose state was parsed from the table by this batch (not in the cache).
        self.loaded: set[bytes] = set()

    def _stored(self, key: bytes) -> Any:
        raw = self.table.get(key)  # within the caller's in_partition
        return None if raw is None else self.processor.state_from_dict(orjson.loads(raw))

    def _load(self, key: bytes) -> Any:
        if key in self.states:
            return self.states[key]
        # Steps may mutate the state they are given: the cached object is handed over and
        # the cache entry is replaced at write-back.
        state = self.cache.take(key)
        if state is MISSING:
            self.loaded.add(key)
            state = self._stored(key)
        self.states[key] = state
        return state

    def step(self, addressed: Addressed, watermark: int) -> StepResult[Any]:
        key = state_key(addressed.brand_id, addressed.key)
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
        """Add the batch's changed states to ``writes``, and keep them in the cache."""
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
        self.sensor.on_state_cache(
            self.processor.name.value, len(self.applied), misses, cache.trim()
        )


@dataclass
class PartitionUpdate:
    """The table writes of one partition's batch, held back until its output is confirmed."""

    batch: KeyBatch
    watermark_key: bytes
    watermark_value: bytes | None
    #: The watermark to sweep the partition's expired state at, once this is committed.
    sweep_at: int | None

    def write(self, writes: TableWrites) -> None:
        """Add the partition's states and watermark record to ``writes``."""
        self.batch.write_back(writes)
        if self.watermark_value is not None:
            writes.set(self.batch.table, self.batch.event, self.watermark_key, self.watermark_value)
