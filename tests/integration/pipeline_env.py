"""Helpers to run siyu for real in integration tests: isolated names, a worker process."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from pipeline.settings import Settings

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]

#: A /metrics scrape: (sample name, sorted label pairs) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """The samples of a siyu process's /metrics on 127.0.0.1:``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by(samples: Samples, name: str, *labels: str) -> Counter[tuple[str, ...]]:
    """Values of ``name`` keyed by the given label values (other labels summed)."""
    out: Counter[tuple[str, ...]] = Counter()
    for (sample, label_items), value in samples.items():
        if sample == name and value:
            d = dict(label_items)
            out[tuple(d.get(label, "") for label in labels)] += int(value)
    return out


def produce(
    bootstrap: str,
    topic: str,
    messages: list[bytes],
    partition: int | None = None,
    timestamp_ms: int | None = None,
) -> None:
    """Send ``messages`` to ``topic`` (to ``partition``, or where the producer chooses; with
    Kafka timestamp ``timestamp_ms``, or now) and wait until the broker has them all."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for m in messages:
        producer.send(topic, m, partition=partition, timestamp_ms=timestamp_ms)
    producer.flush()
    producer.close()


def read_messages(bootstrap: str, topic: str, expect: int) -> list[Any]:
    """At least ``expect`` messages of ``topic``, read from its beginning (waits for them)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
        enable_auto_commit=False,
    )
    got: list[Any] = []
    try:
        wait_for(lambda: got.extend(consumer) or len(got) >= expect, 60, f"{expect} messages")
    finally:
        consumer.close()
    return got


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        last = result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@dataclass
class PipelineEnv:
    """A private namespace on the shared stack: its own topics, group ids and database."""

    kafka_bootstrap: str
    clickhouse_port: int
    name: str

    @classmethod
    def fresh(cls, kafka_bootstrap: str, clickhouse_port: int) -> PipelineEnv:
        return cls(kafka_bootstrap, clickhouse_port, f"t{uuid.uuid4().hex[:10]}")

    def env(self, **extra: str) -> dict[str, str]:
        values = {
            "SIYU_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "SIYU_CLICKHOUSE_URL": f"clickhouse://default:@127.0.0.1:{self.clickhouse_port}/"
            f"siyu_{self.name}",
            "SIYU_APP_ID": f"siyu-{self.name}",
            "SIYU_TOPIC_EVENTS": f"{self.name}.events",
            "SIYU_TOPIC_DEAD_LETTERS": f"{self.name}.dead-letters",
            "SIYU_TOPIC_ROWS": f"{self.name}.rows",
            "SIYU_TOPIC_BY_USER": f"{self.name}.by-user",
            "SIYU_TOPIC_BY_SHARE": f"{self.name}.by-share",
            "SIYU_TOPIC_BY_SHARER": f"{self.name}.by-sharer",
            "SIYU_DATA_DIR": str(REPO / ".local" / "test-workers" / self.name),
            "SIYU_SINK_FLUSH_SECONDS": "0.3",
        }
        values.update(extra)
        return values

    def settings(self, **extra: str) -> Settings:
        fields = {k.removeprefix("SIYU_").lower(): v for k, v in self.env(**extra).items()}
        return Settings(**fields)  # type: ignore[arg-type]

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        """The rows of one query on the namespace's ClickHouse database."""
        from pipeline.sink.clickhouse import client_from_url

        client = client_from_url(self.settings().clickhouse_url)
        try:
            return list(client.execute(sql, params))
        finally:
            client.disconnect()

    def cleanup(self) -> None:
        """Drop what this namespace left on the stack: its database, its topics (and Faust's
        changelogs), its workers' state. Topics left behind pile up on the shared broker and
        make every restart of it slower. First its processes still running: a test that
        failed half-way did not stop them, and an orphaned worker would go on for ever."""
        from kafka.admin import KafkaAdminClient

        from pipeline.sink.clickhouse import client_from_url

        for process in [p for p in _STARTED if p.app_id == f"siyu-{self.name}"]:
            process.stop(signal.SIGKILL, timeout=10)
            _STARTED.remove(process)
        if self.clickhouse_port:
            ch = client_from_url(self.settings().clickhouse_url, database="default")
            try:
                ch.execute(f"DROP DATABASE IF EXISTS siyu_{self.name}")
            finally:
                ch.disconnect()
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.kafka_bootstrap)
        except Exception:  # Kafka away (a test stopped it): nothing to delete now
            pass
        else:
            try:
                ours = [
                    t
                    for t in admin.list_topics()
                    if t.startswith((f"{self.name}.", f"siyu-{self.name}-"))
                ]
                if ours:
                    admin.delete_topics(ours, raise_errors=False)
            finally:
                admin.close()
        shutil.rmtree(self.settings().data_dir, ignore_errors=True)

    def siyu(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args],
            env={**os.environ, **self.env(**extra)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=REPO,
        )


#: Every ``siyu`` child process started here, until its namespace's cleanup.
_STARTED: list[SiyuProcess] = []


class SiyuProcess:
    """A ``siyu <command>`` child process whose web port on 127.0.0.1 answers /readyz."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path, port: int) -> None:
        self.command = command
        self.port = port
        self.app_id = env.get("SIYU_APP_ID")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", command],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        _STARTED.append(self)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.command} exited with {self.proc.returncode}:\n"
                f"{self.log_path.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 90) -> None:
        wait_for(self.ready, timeout, f"{self.command} ready (log {self.log_path})")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


class Worker(SiyuProcess):
    """A ``siyu worker`` process of ``penv``, its web port free."""

    def __init__(self, penv: PipelineEnv, log_path: Path, **extra: str) -> None:
        port = free_port()
        env = penv.env(SIYU_WORKER_WEB_PORT=str(port), **extra)
        super().__init__("worker", env, log_path, port)
        self.penv, self.extra = penv, extra

    def again(self, log_path: Path) -> Worker:
        """A new worker with this one's settings (this one has exited), as a supervisor
        would start it."""
        return Worker(self.penv, log_path, **self.extra)


def stop_together(processes: list[SiyuProcess], timeout: float = 60) -> list[int]:
    """SIGTERM every process at once, then wait for each; returns their exit codes. Workers
    stopped one by one would take each other's partitions over on the way, and a second
    SIGTERM (``stop``'s) would cut a shutdown short."""
    for p in processes:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            p.proc.wait(timeout=timeout)
        finally:
            p.stop()
    return [int(p.proc.returncode) for p in processes]


def stable_members(penv: PipelineEnv) -> int | None:
    """How many members the workers' consumer group has, or None while it rebalances (its
    member list is partial then)."""
    from kafka.admin import KafkaAdminClient

    # kafka-python warns of every member when it describes a group: it cannot decode
    # Faust's member metadata, which the count does not need.
    logging.getLogger("kafka.admin._groups").setLevel(logging.ERROR)
    group = penv.settings().app_id
    admin = KafkaAdminClient(bootstrap_servers=penv.kafka_bootstrap)
    try:
        described = admin.describe_groups([group])[group]
    finally:
        admin.close()
    return len(described["members"]) if described["group_state"] == "Stable" else None


def wait_all_assigned(penv: PipelineEnv, workers: list[Worker], timeout: float = 90) -> None:
    """Wait until every worker is a member of the group and done with its assignment: the
    group is stable with them all, and each one is ready again (a worker is not ready from
    the moment it starts to join until its partitions are assigned and recovered)."""
    wait_for(lambda: stable_members(penv) == len(workers), timeout, "every worker in the group")
    for w in workers:
        w.wait_ready(timeout)


@contextmanager
def running_worker(penv: PipelineEnv, log_path: Path, **extra: str) -> Iterator[Worker]:
    worker = Worker(penv, log_path, **extra)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
