"""The worker's Kafka consumer runs on the worker's own event loop, against a real broker:
starting it starts no thread, it fetches what was produced, and stopping it closes it and
leaves no task behind (pipeline/worker/faust/aiokafka.py, ``SameLoopConsumerThread``)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from faust.types import TP

from pipeline.settings import load_settings
from pipeline.worker.app import create_app
from tests.integration.conftest import FreshTopic
from tests.integration.pipeline_env import produce


def test_the_consumer_fetches_on_the_workers_loop_and_stops_clean(
    kafka_bootstrap: str,
    fresh_topic: FreshTopic,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    topic = fresh_topic(partitions=1)
    produce(kafka_bootstrap, topic, [b"a", b"b", b"c"], partition=0)
    monkeypatch.setenv("SIYU_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    tp = TP(topic, 0)

    async def main() -> None:
        consumer = create_app(load_settings()).consumer
        service = consumer._thread
        threads = threading.active_count()
        before = asyncio.all_tasks()
        await asyncio.wait_for(service.start(), 30)
        try:
            assert threading.active_count() == threads, "no thread of its own"
            assert await service.highwaters(tp) == {tp: 3}
            await service.call_thread(service._ensure_consumer().assign, [tp])
            await service.seek_wait({tp: 0})
            fetched: list[bytes] = []
            for _ in range(20):  # a fetch may return before every record arrived
                records = await service.getmany({tp}, timeout=1.0)
                fetched += [r.value for r in records.get(tp, [])]
                if len(fetched) >= 3:
                    break
            assert fetched == [b"a", b"b", b"c"]
        finally:
            await asyncio.wait_for(service.stop(), 30)
        assert service._ensure_consumer()._closed
        left = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()}
        assert not left, f"tasks left running: {left}"

    asyncio.run(main())
