"""Helpers to run a real ``siyu collector`` and to see what reached its topics."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from tests.integration import stack
from tests.integration.pipeline_env import SiyuProcess, free_port, wait_for


@dataclass
class Answer:
    """An HTTP answer: status, headers, parsed JSON body (or None)."""

    status: int
    headers: dict[str, str]
    body: Any


class CollectorProcess(SiyuProcess):
    """A ``siyu collector`` child process on a free port of 127.0.0.1."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**env, "SIYU_COLLECTOR_HOST": "127.0.0.1", "SIYU_COLLECTOR_PORT": str(port)}
        super().__init__("collector", env, log_path, port)


def _answer(status: int, headers: Any, raw: bytes) -> Answer:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return Answer(status, {k: v for k, v in headers.items()}, body)


def get(url: str) -> Answer:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return _answer(r.status, r.headers, r.read())
    except urllib.error.HTTPError as err:
        return _answer(err.code, err.headers, err.read())


def post(
    url: str, body: bytes | Any, key: str | None = None, headers: dict[str, str] | None = None
) -> Answer:
    """POST ``body`` (bytes, or a value sent as JSON) with ``key`` as the bearer key."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, method="POST", headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return _answer(r.status, r.headers, r.read())
    except urllib.error.HTTPError as err:
        return _answer(err.code, err.headers, err.read())


def post_chunked(url: str, chunks: list[bytes], key: str) -> Answer:
    """POST without Content-Length (chunked transfer encoding)."""
    parts = url.split("/", 3)
    host, port = parts[2].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(
            "POST",
            "/" + parts[3],
            body=iter(chunks),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        r = conn.getresponse()
        return _answer(r.status, r.headers, r.read())
    finally:
        conn.close()


def end_offsets(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [
            TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))
        ]
        return {tp: int(o) for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` from the beginning to the current end offsets."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        ends = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []

        def caught_up() -> bool:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            return all(consumer.position(tp) >= ends[tp] for tp in tps)

        wait_for(caught_up, 60, f"reading {topic} to its end")
        return records
    finally:
        consumer.close()


def event_ids(records: list[Any]) -> list[str]:
    """Event ids of envelope or single-event records, in topic order per partition."""
    ids: list[str] = []
    for r in records:
        obj = json.loads(r.value)
        if "events" in obj:
            ids.extend(e["event_id"] for e in obj["events"])
        else:
            ids.append(obj["event_id"])
    return ids


@contextmanager
def kafka_stopped(start_attempts: int = 5) -> Iterator[None]:
    """Kafka stopped for the block, and started again however the block ends.

    Like ``stack.service_stopped``, but the start is retried: on this shared machine a
    start right after a stop can find the old broker still releasing its ports
    ("port ... is already used"), and one failed start must not leave Kafka down for
    everybody.
    """
    stack.stop_service("kafka")
    try:
        yield
    finally:
        for attempt in range(1, start_attempts + 1):
            try:
                stack.start_service("kafka")
                break
            except stack.StackError:
                if attempt == start_attempts:
                    raise
                time.sleep(3)
