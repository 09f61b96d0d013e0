"""The sink service: rows topic and dead-letter topic in, batched ClickHouse inserts out.

It is a plain aiokafka consumer with manual commits rather than a Faust agent, because
the one promise that matters here is "commit only what ClickHouse accepted", and Faust
acknowledges a batch when the agent is cancelled or raises. The loop:

1. poll row batches and dead letters, accumulate rows per table;
2. when ``sink_max_rows`` rows are pending or the oldest has waited ``sink_flush_seconds``,
   insert each table's rows (one insert per table), retrying while ClickHouse is down —
   the loop does not poll meanwhile, so consumption pauses instead of buffering;
3. commit the offsets of exactly the messages whose rows were inserted.

A crash at any point re-delivers uncommitted messages; the tables are keyed so that
inserting them again changes no query result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from mode import Service

from pipeline import metrics
from pipeline.contract.deadletter import H_DETAIL, H_REASON, H_TOPIC
from pipeline.settings import Settings
from pipeline.sink.cluster import insert_settings
from pipeline.sink.rows import DEAD_LETTERS, RowBatch, Values, dead_letter_row
from pipeline.sink.writer import ClickHouseWriter

log = logging.getLogger(__name__)


class _Pending:
    """Rows waiting for the next flush, and the offsets they complete."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, tuple[str, ...]], list[Values]] = defaultdict(list)
        #: Per table: (Kafka timestamp in ms, rows) of the messages the rows came from.
        self.published: dict[tuple[str, tuple[str, ...]], list[tuple[int, int]]] = defaultdict(list)
        self.offsets: dict[TopicPartition, int] = {}
        self.count = 0
        self.since = 0.0

    def add(
        self, table: str, columns: tuple[str, ...], rows: list[Values], published_ms: int
    ) -> None:
        if not self.count:
            self.since = time.monotonic()
        self.rows[(table, columns)].extend(rows)
        self.published[(table, columns)].append((published_ms, len(rows)))
        self.count += len(rows)

    def clear(self) -> None:
        self.rows.clear()
        self.published.clear()
        self.offsets.clear()
        self.count = 0


class SinkService(Service):
    """Consumes row batches and dead letters and writes them to ClickHouse."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.writer = ClickHouseWriter(
            settings.clickhouse_url,
            settings.clickhouse_database,
            retry_max_seconds=settings.sink_retry_max_seconds,
            client_settings=insert_settings(settings),
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._pending = _Pending()
        self._lock = asyncio.Lock()
        self._drained = asyncio.Event()
        self.rows_inserted = 0
        self.inserts = 0
        #: Offsets this sink committed, per partition (for the lag gauge).
        self.committed: dict[TopicPartition, int] = {}

    async def on_start(self) -> None:
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=f"{s.app_id}-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.sink_max_messages,
            # A long ClickHouse outage blocks polling; stay in the group meanwhile.
            max_poll_interval_ms=3_600_000,
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, s.session_timeout_s / 3) * 1000),
        )
        self._consumer.subscribe(s.sink_topics(), listener=_FlushOnRevoke(self))
        await self._consumer.start()

    async def on_stop(self) -> None:
        # Let the loop finish its flush (or give up on it when ClickHouse is down).
        try:
            await asyncio.wait_for(self._drained.wait(), timeout=30)
        except TimeoutError:
            log.warning("sink did not drain in 30s; uncommitted rows will be re-delivered")
        if self._consumer is not None:
            await self._consumer.stop()
        self.writer.close()

    @Service.task
    async def _consume(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        flush_after = self.settings.sink_flush_seconds
        try:
            while not self.should_stop:
                wait = flush_after
                if self._pending.count:
                    wait = max(0.0, flush_after - (time.monotonic() - self._pending.since))
                batches = await consumer.getmany(timeout_ms=int(wait * 1000) + 1)
                for tp, messages in batches.items():
                    for msg in messages:
                        self._accept(tp.topic, msg.value or b"", msg.headers or (), msg.timestamp)
                        self._pending.offsets[tp] = msg.offset + 1
                if (
                    self._pending.count >= self.settings.sink_max_rows
                    or (
                        self._pending.count
                        and time.monotonic() - self._pending.since >= flush_after
                    )
                    or (self._pending.offsets and not self._pending.count)
                ):
                    await self.flush()
            await self.flush()
        except asyncio.CancelledError:
            log.info(
                "sink stopped with %d rows not inserted; they will be re-delivered",
                self._pending.count,
            )
        finally:
            self._drained.set()

    def _accept(self, topic: str, value: bytes, headers: Any, timestamp_ms: int) -> None:
        # When the worker rejected it is the dead-letter message's own timestamp, not the
        # time of this insert, so a replayed dead-letter topic writes identical rows.
        now = timestamp_ms // 1000 if timestamp_ms > 0 else int(time.time())
        if topic == self.settings.topic_dead_letters:
            self._pending.add(
                DEAD_LETTERS.name,
                DEAD_LETTERS.columns,
                [dead_letter_row(value, list(headers), now)],
                timestamp_ms,
            )
            return
        try:
            batch = RowBatch.decode(value)
        except ValueError as err:
            # Not ours or corrupt: keep it, visibly, instead of dropping it.
            log.error("undecodable row batch on %s, dead-lettered: %s", topic, err)
            row = dead_letter_row(
                value,
                [
                    (H_REASON, b"bad_row_batch"),
                    (H_DETAIL, str(err).encode()),
                    (H_TOPIC, topic.encode()),
                ],
                now,
            )
            self._pending.add(DEAD_LETTERS.name, DEAD_LETTERS.columns, [row], timestamp_ms)
            metrics.dead_letter("bad_row_batch")
            return
        self._pending.add(batch.table, tuple(batch.columns), batch.rows, timestamp_ms)

    async def flush(self) -> None:
        """Insert everything pending, then commit its offsets. Raises CancelledError when
        stopping while ClickHouse is down (then nothing is committed)."""
        async with self._lock:
            pending = self._pending
            if not pending.offsets:
                return
            for (table, columns), rows in pending.rows.items():
                if rows:
                    published = pending.published[(table, columns)]
                    source_ms = [ms for ms, n in published for _ in range(n)]
                    await self.writer.insert(
                        table, columns, rows, lambda: self.should_stop, source_ms
                    )
                    self.inserts += 1
                    self.rows_inserted += len(rows)
                    metrics.record_flushed(table, len(rows), pending.published[(table, columns)])
            assert self._consumer is not None
            try:
                await self._consumer.commit(
                    {tp: OffsetAndMetadata(off, "") for tp, off in pending.offsets.items()}
                )
                self.committed.update(pending.offsets)
                metrics.record_flush_done()
            except KafkaError as err:
                # A rebalance took partitions away meanwhile: their new owner re-reads
                # and re-inserts these rows, which the tables absorb (same keys).
                log.warning("sink commit failed after a successful insert: %s", err)
            pending.clear()

    async def lags(self) -> list[tuple[str, int, int]]:
        """``(topic, partition, messages not committed yet)`` of the partitions this sink owns.

        The end is the highwater its consumer last saw; a partition this sink has not
        committed yet asks the group coordinator once.
        """
        consumer = self._consumer
        if consumer is None:
            return []
        assigned = consumer.assignment()
        for tp in assigned:
            if tp not in self.committed:
                offset = await consumer.committed(tp)
                if offset is not None:
                    self.committed.setdefault(tp, offset)
        return [
            (tp.topic, tp.partition, lag)
            for tp, lag in metrics.lag_of(assigned, consumer.highwater, self.committed.get)
        ]


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions move to another worker, insert and commit what was read from them."""

    def __init__(self, service: SinkService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Stopping while ClickHouse is down: nothing is committed, the new owner re-reads.
        with contextlib.suppress(asyncio.CancelledError):
            await self.service.flush()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None
