"""The Faust topology: agents that move events to the pure logic and results to topics.

Faust acknowledges a batch when the agent raises or is cancelled. So every batch here is
run to completion (shielded from cancellation) and its output is confirmed by Kafka before
the batch is acknowledged; errors are handled inside, never left to Faust.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import faust
from aiokafka.errors import KafkaError

from pipeline.deadletter import Source
from pipeline.ingest import IngestResult, ingest_message
from pipeline.settings import Settings
from pipeline.sink.rows import EVENTS, RowBatch, event_row

log = logging.getLogger(__name__)


async def run_to_completion(work: Awaitable[None]) -> None:
    """Await ``work``; if cancelled meanwhile, finish it first, then re-raise.

    Faust acks the events of a batch when the agent is cancelled; finishing the batch before
    that keeps "acknowledged" meaning "done".
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def register(app: faust.App, s: Settings) -> None:
    """Declare the topics and agents of the pipeline on ``app``."""
    events_topic = app.topic(s.topic_events, key_serializer="raw", value_serializer="raw")
    rows_topic = app.topic(s.topic_rows, key_serializer="raw", value_serializer="raw")
    dead_topic = app.topic(s.topic_dead_letters, key_serializer="raw", value_serializer="raw")

    async def publish(result: IngestResult) -> None:
        now = int(time.time())
        rows = [event_row(ev, src.partition, src.offset, now) for ev, src in result.accepted]
        batches = [
            RowBatch(EVENTS.name, EVENTS.columns, rows[i : i + s.sink_max_rows]).encode()
            for i in range(0, len(rows), s.sink_max_rows)
        ]
        attempt = 0
        while True:
            try:
                futures: list[Any] = [await rows_topic.send(value=b) for b in batches]
                futures += [
                    await dead_topic.send(key=dl.key, value=dl.value, headers=dl.headers)
                    for dl in result.dead_letters
                ]
                # Confirmed by Kafka (acks=all) before the batch counts as done.
                await asyncio.gather(*futures)
                return
            except KafkaError as err:
                # Resending may duplicate some rows; the sink tables are keyed, so that is
                # harmless, while acknowledging unsent output would lose it.
                attempt += 1
                delay = min(30.0, 0.5 * 2**attempt)
                log.warning(
                    "publishing a batch failed (%s); retry %d in %.1fs", err, attempt, delay
                )
                await asyncio.sleep(delay)

    @app.agent(events_topic, name="siyu.ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        # take_events is missing from StreamT (the interface), present on Stream.
        async for batch in stream.take_events(s.ingest_batch, within=0.2):  # type: ignore[attr-defined]
            await run_to_completion(_handle(batch))

    async def _handle(batch: Sequence[faust.EventT[bytes]]) -> None:
        result = IngestResult()
        for event in batch:
            msg = event.message
            src = Source(msg.topic, msg.partition, msg.offset, int((msg.timestamp or 0) * 1000))
            ingest_message(result, msg.key, event.value, src)
        await publish(result)
