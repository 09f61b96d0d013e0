"""A batch's table writes reach the real Kafka as Faust would have written them: in the
table's changelog topic, in the partition of the input, the last write of a key winning, a
delete as a tombstone, split over record batches when they do not fit in one; the store
gets them (and the confirmed offset) only after Kafka confirmed them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rocksdict import Options, Rdict

from pipeline.worker.faust.tables import TableWrites
from tests.integration.conftest import FreshTopic


@dataclass
class Store:
    """The part of a Faust store the writes use: mapping plus persisted offsets."""

    data: dict[bytes, bytes] = field(default_factory=dict)
    offsets: dict[Any, int] = field(default_factory=dict)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def __delitem__(self, key: bytes) -> None:
        del self.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.offsets[(tp.topic, tp.partition)] = offset


class RocksStore:
    """The part of Faust's RocksDB store the writes use: a real rocksdict database per
    partition (raw mode, as Faust opens them) and Faust's key for the persisted offset."""

    use_rocksdict = True
    offset_key = b"__faust\x00offset__"

    def __init__(self, topic: str, directory: Path) -> None:
        self.topic, self.directory = topic, directory
        self._dbs: dict[int, Rdict] = {}

    def _db_for_partition(self, partition: int) -> Rdict:
        if partition not in self._dbs:
            path = str(self.directory / f"p{partition}.db")
            self._dbs[partition] = Rdict(path, options=Options(raw_mode=True))
        return self._dbs[partition]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._db_for_partition(1)[key] = value  # the test's earlier keys are partition 1's

    @property
    def data(self) -> dict[bytes, bytes]:
        return {k: v for db in self._dbs.values() for k, v in db.items() if k != self.offset_key}

    @property
    def offsets(self) -> dict[Any, int]:
        return {
            (self.topic, p): int(db[self.offset_key])
            for p, db in self._dbs.items()
            if self.offset_key in db
        }

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()


class Table:
    """The part of a Faust table the writes use: its changelog topic and its store."""

    def __init__(self, topic: str, rocksdb: Path | None = None) -> None:
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: topic)
        self.data: Any = Store() if rocksdb is None else RocksStore(topic, rocksdb)


class Event:
    """An input event of ``partition`` (the writes route by it, as Faust does)."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


async def read_all(bootstrap: str, topic: str, expected: int) -> list[tuple[int, int, Any, Any]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: list[tuple[int, int, Any, Any]] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < expected:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    got.extend((r.partition, r.offset, r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    return sorted(got)


async def write_and_read(
    bootstrap: str, topic: str, max_batch_size: int, rocksdb: Path | None = None
) -> None:
    t = Table(topic, rocksdb)
    t.data[b"gone"] = b"old"
    t.data[b"k0"] = b"before"
    writes = TableWrites()
    writes.set(t, Event(1), b"k0", b"first")
    writes.set(t, Event(1), b"k0", b"second")  # the later write of the batch wins
    writes.set(t, Event(1), b"gone", None)
    for i in range(1, 60):
        writes.set(t, Event(2), b"k%d" % i, b"v%d-" % i + b"x" * 100)
    assert len(writes) == 61

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=max_batch_size)
    await producer.start()
    try:
        await writes.send(producer)
    finally:
        await producer.stop()
    # Nothing reaches the store before apply().
    assert t.data.data == {b"gone": b"old", b"k0": b"before"}
    assert t.data.offsets == {}

    records = await read_all(bootstrap, topic, 61)
    assert [r for r in records if r[0] == 1] == [(1, 0, b"k0", b"second"), (1, 1, b"gone", None)]
    on_2 = [r for r in records if r[0] == 2]
    assert [(offset, key) for _, offset, key, _ in on_2] == [
        (i - 1, b"k%d" % i) for i in range(1, 60)
    ]
    assert all(value.startswith(b"v%d-" % i) for i, (*_, value) in enumerate(on_2, start=1))

    writes.apply()
    assert t.data.data[b"k0"] == b"second" and b"gone" not in t.data.data
    assert t.data.data[b"k59"].startswith(b"v59-")
    assert t.data.offsets == {(topic, 1): 1, (topic, 2): 58}
    if rocksdb is not None:
        t.data.close()


@pytest.mark.parametrize("max_batch_size", [1 << 20, 1024], ids=["one-batch", "split"])
def test_writes_go_to_the_changelog_then_the_store(
    kafka_bootstrap: str, fresh_topic: FreshTopic, max_batch_size: int
) -> None:
    topic = fresh_topic(partitions=4, config={"cleanup.policy": "compact"})
    asyncio.run(write_and_read(kafka_bootstrap, topic, max_batch_size))


def test_rocksdb_stores_get_each_partitions_writes_and_offset_in_one_write(
    kafka_bootstrap: str, fresh_topic: FreshTopic, tmp_path: Path
) -> None:
    """With Faust's RocksDB store the writes bypass its per-key path: one atomic RocksDB
    write per partition, the persisted changelog offset included, under Faust's key."""
    topic = fresh_topic(partitions=4, config={"cleanup.policy": "compact"})
    asyncio.run(write_and_read(kafka_bootstrap, topic, 1 << 20, rocksdb=tmp_path))
