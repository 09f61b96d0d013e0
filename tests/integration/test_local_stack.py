"""The local stack works with the project's clients: Kafka 3.9 with aiokafka 0.14 (Faust's
driver) and kafka-python, compaction, ClickHouse 18.16 with clickhouse-driver, and
stack.sh's own promises (second `up` harmless, `status`, loopback only)."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTopicPartition
from clickhouse_driver import Client
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.integration import stack
from tests.integration.conftest import FreshTopic

# --- Kafka: aiokafka consumer group ----------------------------------------------------------


def _aio_consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=500,
    )


async def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


async def _drain(
    consumer: AIOKafkaConsumer, got: dict[str, AioTopicPartition], stop: asyncio.Event
) -> None:
    """Consume into ``got`` (value -> partition it came from), committing after each batch."""
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=200)
        for tp, records in batches.items():
            for record in records:
                got[record.value.decode()] = tp
        if batches:
            await consumer.commit()


async def _group_round_trip(bootstrap: str, topic: str) -> None:
    group = stack.unique_name("group")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    c1, c2 = (_aio_consumer(bootstrap, topic, group) for _ in range(2))
    try:
        await c1.start()
        await c2.start()

        def balanced() -> bool:
            a1, a2 = c1.assignment(), c2.assignment()
            return bool(a1) and bool(a2) and not (a1 & a2) and len(a1 | a2) == 4

        await _wait_until(balanced, 60, "both group members to share the 4 partitions")
        parts1, parts2 = set(c1.assignment()), set(c2.assignment())

        sent = {f"m{i}" for i in range(400)}
        pending = [
            await producer.send(topic, v.encode(), key=f"k{i}".encode())
            for i, v in enumerate(sorted(sent))
        ]
        await asyncio.gather(*pending)

        got1: dict[str, AioTopicPartition] = {}
        got2: dict[str, AioTopicPartition] = {}
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_drain(c, g, stop)) for c, g in ((c1, got1), (c2, got2))]
        try:
            await _wait_until(
                lambda: len(got1.keys() | got2.keys()) >= len(sent),
                60,
                "all messages consumed by the group",
            )
        finally:
            stop.set()
            await asyncio.gather(*tasks)

        assert got1.keys() | got2.keys() == sent
        assert got1 and got2, "both members must receive messages"
        assert set(got1.values()) <= parts1
        assert set(got2.values()) <= parts2
    finally:
        await c1.stop()
        await c2.stop()

    # Committed offsets survive a restart: a new member sees only what came after.
    later = {f"later{i}" for i in range(20)}
    for v in sorted(later):
        await producer.send_and_wait(topic, v.encode(), key=v.encode())
    await producer.stop()

    c3 = _aio_consumer(bootstrap, topic, group)
    await c3.start()
    try:
        got3: dict[str, AioTopicPartition] = {}
        stop = asyncio.Event()
        task = asyncio.create_task(_drain(c3, got3, stop))
        try:
            # Were the offsets lost, the old records would come (first) instead.
            await _wait_until(lambda: len(got3) >= len(later), 60, "the restarted member")
        finally:
            stop.set()
            await task
        assert set(got3) == later, f"re-delivered: {sorted(set(got3) - later)[:5]}"
    finally:
        await c3.stop()


def test_aiokafka_consumer_group_shares_partitions_and_keeps_offsets(
    kafka_bootstrap: str, fresh_topic: FreshTopic
) -> None:
    topic = fresh_topic(partitions=4, prefix="aio")
    asyncio.run(_group_round_trip(kafka_bootstrap, topic))


# --- Kafka: kafka-python ---------------------------------------------------------------------


def _read_all(consumer: KafkaConsumer, tps: list[TopicPartition]) -> list[tuple[bytes, bytes]]:
    """Every record of ``tps`` from the beginning up to the current end offsets."""
    consumer.seek_to_beginning(*tps)
    end = consumer.end_offsets(tps)
    records: list[tuple[bytes, bytes]] = []

    def at_end() -> bool:
        for recs in consumer.poll(timeout_ms=200).values():
            records.extend((r.key, r.value) for r in recs)
        return all(consumer.position(tp) >= end[tp] for tp in tps)

    stack.wait_for(at_end, 30, "reading the topic to its end")
    return records


def test_kafka_python_round_trip_with_acks_all(
    kafka_bootstrap: str, fresh_topic: FreshTopic
) -> None:
    topic = fresh_topic(partitions=4, prefix="kp")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        sent = {(f"k{i}".encode(), f"v{i}".encode()) for i in range(100)}
        futures = [producer.send(topic, key=k, value=v) for k, v in sent]
        metas = [f.get(timeout=30) for f in futures]
    finally:
        producer.close()
    assert {m.partition for m in metas} == {0, 1, 2, 3}

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]
        consumer.assign(tps)
        assert set(_read_all(consumer, tps)) == sent
    finally:
        consumer.close()


def test_compacted_topic_keeps_latest_value_per_key(
    kafka_bootstrap: str, fresh_topic: FreshTopic
) -> None:
    config = {
        "cleanup.policy": "compact",
        "segment.ms": "100",
        "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0",
        "delete.retention.ms": "100",
    }
    topic = fresh_topic(partitions=1, config=config, prefix="compact")
    applied = stack.topic_config(topic, bootstrap=kafka_bootstrap)
    assert {k: applied.get(k) for k in config} == config

    keys = [f"k{i}".encode() for i in range(10)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    try:
        for version in range(5):
            for k in keys:
                producer.send(topic, key=k, value=f"v{version}".encode())
        producer.flush()
        assert len(_read_all(consumer, [tp])) == 50

        rolls = 0

        def compacted() -> bool:
            # The active segment is never cleaned: each new record (once segment.ms has
            # passed) rolls a new one and makes the previous ones cleanable.
            nonlocal rolls
            rolls += 1
            producer.send(topic, key=b"roll", value=str(rolls).encode()).get(timeout=30)
            values: dict[bytes, list[bytes]] = {}
            for k, v in _read_all(consumer, [tp]):
                values.setdefault(k, []).append(v)
            return all(values.get(k) == [b"v4"] for k in keys)

        stack.wait_for(compacted, 60, "the log cleaner to compact the topic", interval=0.5)
    finally:
        producer.close()
        consumer.close()


# --- ClickHouse ------------------------------------------------------------------------------


@pytest.fixture
def ch(clickhouse_port: int) -> Iterator[Client]:
    database = f"stacktest_{uuid.uuid4().hex[:10]}"
    client = Client("127.0.0.1", port=clickhouse_port)
    client.execute(f"CREATE DATABASE {database}")
    client.execute(f"USE {database}")
    try:
        yield client
    finally:
        client.execute(f"DROP DATABASE IF EXISTS {database}")
        client.disconnect()


def test_clickhouse_version_and_replacing_merge_tree_final(ch: Client) -> None:
    [(version,)] = ch.execute("SELECT version()")
    assert version.startswith("18.16."), version

    ch.execute(
        "CREATE TABLE state (k UInt32, v String, ver UInt64) "
        "ENGINE = ReplacingMergeTree(ver) ORDER BY k"
    )
    # Separate inserts are separate parts: duplicates until a merge, or FINAL.
    ch.execute("INSERT INTO state (k, v, ver) VALUES", [(1, "a1", 1), (2, "b1", 1)])
    ch.execute("INSERT INTO state (k, v, ver) VALUES", [(1, "a2", 2), (2, "b0", 0)])
    ch.execute("INSERT INTO state (k, v, ver) VALUES", [(3, "c1", 1), (1, "a2", 2)])
    assert ch.execute("SELECT k, v, ver FROM state FINAL ORDER BY k") == [
        (1, "a2", 2),
        (2, "b1", 1),
        (3, "c1", 1),
    ]
    [(parts,)] = ch.execute(
        "SELECT count() FROM system.parts WHERE database = currentDatabase() "
        "AND table = 'state' AND active"
    )
    assert parts >= 1


def test_clickhouse_http_port_answers(clickhouse_port: int) -> None:
    url = f"http://127.0.0.1:{stack.clickhouse_http_port()}/?query=SELECT%201"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"1\n"


# --- stack.sh --------------------------------------------------------------------------------


def test_second_up_is_harmless_and_status_reports_both(local_stack: dict[str, str]) -> None:
    up = stack.run_stack("up")
    assert "kafka: already running" in up.stdout, up.stdout
    assert "clickhouse: already running" in up.stdout, up.stdout

    status = stack.run_stack("status")
    lines = status.stdout.splitlines()
    kafka = next(line for line in lines if line.startswith("kafka:"))
    clickhouse = next(line for line in lines if line.startswith("clickhouse:"))
    assert kafka.startswith("kafka: running"), kafka
    assert f"version {local_stack['SIYU_KAFKA_VERSION']}" in kafka
    assert clickhouse.startswith("clickhouse: running"), clickhouse
    assert "version 18.16." in clickhouse


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.append(address)
    return found


LOOPBACK = {
    "0100007F",  # 127.0.0.1
    "0000000000000000FFFF00000100007F",  # ::ffff:127.0.0.1
    "00000000000000000000000001000000",  # ::1
}


def test_services_listen_on_loopback_only(local_stack: dict[str, str]) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc/net/tcp")
    ports = [
        int(local_stack[name])
        for name in (
            "SIYU_KAFKA_PORT",
            "SIYU_KAFKA_CONTROLLER_PORT",
            "SIYU_CLICKHOUSE_PORT",
            "SIYU_CLICKHOUSE_HTTP_PORT",
        )
    ]
    for port in ports:
        addresses = _listening(port)
        assert addresses, f"nothing listens on {port}"
        assert set(addresses) <= LOOPBACK, f"port {port} listens on {addresses}"
