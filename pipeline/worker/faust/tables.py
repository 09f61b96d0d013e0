"""A batch's table writes, sent to the tables' changelogs as whole record batches.

Faust turns every table write into one changelog message through its producer buffer: a
future, a callback and a buffered send per record. A worker writes about one record per
event per processor, and that machinery was a large share of its CPU. Here a batch's
writes are collected, each (changelog, partition)'s records go out as one aiokafka record
batch, and only once Kafka confirmed them are the values put into the tables' stores.

The records are the ones Faust would write (the table's changelog topic, the partition of
the input being processed, raw key, raw value or ``None`` to delete), so Faust's recovery,
standby replicas and compaction read them unchanged. Writing the store only after the
changelog confirmed means a store (RocksDB on disk) is never ahead of its changelog: a
crash in between re-delivers the input, which recomputes the same writes.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faust.streams import _current_event
from faust.types import TP


@contextmanager
def in_partition(event: Any) -> Iterator[None]:
    """Make Faust route table reads and writes (store, changelog) to ``event``'s partition.

    Faust takes the partition of a table access from the event being processed; a batch
    holds events of several partitions, so the partition is set explicitly around I/O.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class TableWrites:
    """The writes of one batch: :meth:`set` collects them (``None`` deletes), :meth:`send`
    confirms them in the changelogs, :meth:`apply` puts them into the stores."""

    def __init__(self) -> None:
        #: (table, partition) -> (an input event of that partition, the partition's writes).
        self._writes: dict[tuple[Any, int], tuple[Any, dict[bytes, bytes | None]]] = {}
        #: (changelog topic, partition) -> offset of the last record Kafka confirmed.
        self._confirmed: dict[tuple[str, int], int] = {}

    def __len__(self) -> int:
        return sum(len(writes) for _, writes in self._writes.values())

    def set(self, table: Any, event: Any, key: bytes, value: bytes | None) -> None:
        """Write ``value`` (``None``: delete) under ``key`` in ``event``'s partition."""
        partition = event.message.partition
        entry = self._writes.get((table, partition))
        if entry is None:
            entry = self._writes[(table, partition)] = (event, {})
        entry[1][key] = value  # a later write of the key in the batch replaces the earlier

    async def send(self, producer: Any) -> None:
        """Send every partition's records as record batches and wait until Kafka confirmed
        all of them. Raises what the producer raises; calling again sends everything again
        (a changelog record sent twice is harmless: the later one wins, with equal value).

        ``producer`` is the aiokafka producer of the app (``app.producer._ensure_producer()``).
        """
        futures: list[tuple[tuple[str, int], int, Any]] = []
        for (table, partition), (_, writes) in self._writes.items():
            topic = table.changelog_topic.get_topic_name()
            records = list(writes.items())
            i = 0
            while i < len(records):
                batch, count = producer.create_batch(), 0
                while i < len(records):
                    key, value = records[i]
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        break
                    i, count = i + 1, count + 1
                if count == 0:  # aiokafka takes any first record; never loop on one it did not
                    raise RuntimeError(
                        f"{topic}[{partition}]: an empty record batch refused {key!r}"
                    )
                batch.close()
                sent = await producer.send_batch(batch, topic, partition=partition)
                futures.append(((topic, partition), count, sent))
        for tp, count, future in futures:
            metadata = await future
            last = metadata.offset + count - 1
            if last > self._confirmed.get(tp, -1):
                self._confirmed[tp] = last

    def apply(self) -> None:
        """Put the confirmed writes into the tables' stores (memory or RocksDB), and record
        how far the changelogs hold them (RocksDB keeps that offset to shorten recovery)."""
        for (table, partition), (event, writes) in self._writes.items():
            store = table.data
            topic = table.changelog_topic.get_topic_name()
            offset = self._confirmed.get((topic, partition))
            db = partition_db(store, partition)
            if db is not None:
                _write_batch(db, store.offset_key, writes, offset)
                continue
            with in_partition(event):
                for key, value in writes.items():
                    if value is not None:
                        store[key] = value
                    elif key in store:
                        del store[key]
                if offset is not None:
                    store.set_persisted_offset(TP(topic, partition), offset)


def partition_db(store: Any, partition: int) -> Any | None:
    """The RocksDB (rocksdict) database of one partition of a Faust store, or None for a
    store that is not one database per partition (the memory store).

    Faust's RocksDB store keeps one database per table partition and finds it by the
    current event's partition; siyu's table partition of a key is its input partition
    (pipeline.worker.topology.partition_for), so that database holds exactly the partition's keys.
    """
    db_for = getattr(store, "_db_for_partition", None)
    if db_for is None or not getattr(store, "use_rocksdict", False):
        return None
    return db_for(partition)


def _write_batch(
    db: Any, offset_key: bytes, writes: dict[bytes, bytes | None], offset: int | None
) -> None:
    """A partition's writes and its persisted changelog offset in one atomic RocksDB write,
    instead of Faust's path of one put per key (with its serialisers and key index): a
    crash leaves the database with all of them or none."""
    from rocksdict import WriteBatch  # the rocksdb extra; only RocksDB stores come here

    batch = WriteBatch(raw_mode=True)
    for key, value in writes.items():
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    if offset is not None:
        batch.put(offset_key, str(offset).encode())
    db.write(batch)
