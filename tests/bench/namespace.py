"""A private namespace on the shared stack for one benchmark run, and what a run observes.

Every run gets its own topics, consumer groups, ClickHouse database and worker data
directory (:class:`tests.integration.pipeline_env.PipelineEnv`), so runs cannot see each
other's events or state, and other engineers' work on the same stack is left alone. A
namespace removes everything it made when the run ends: the database, every topic whose
name carries the namespace (the pipeline's topics, the tables' changelogs, Faust's
internal topics) and the data directory. Worker logs are kept only when a run failed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kafka.admin import KafkaAdminClient

from pipeline.kafka.quiescence import Quiescence
from pipeline.sink.clickhouse import check_identifier, client_from_url
from tests.integration.pipeline_env import REPO, PipelineEnv, Worker

#: Worker logs of the runs (kept when a run fails); ignored by git like all of .local/.
LOGS = REPO / ".local" / "bench"
_TICKS = os.sysconf("SC_CLK_TCK")


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so an interrupted run still stops its worker and
    removes its namespace (the default action would kill the harness and orphan both)."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


@contextmanager
def namespace(kafka: str, clickhouse_port: int) -> Iterator[PipelineEnv]:
    """A fresh namespace with its database migrated and its topics created; removed after."""
    penv = PipelineEnv.fresh(kafka, clickhouse_port)
    try:
        for command in ("migrate", "topics"):
            done = penv.siyu(command)
            if done.returncode != 0:
                raise SystemExit(f"siyu {command} failed:\n{done.stderr}")
        yield penv
    finally:
        remove(penv)


def remove(penv: PipelineEnv) -> None:
    """Drop the namespace's database, topics and data directory. A step that fails is
    reported and the others still run, so a failed cleanup never hides a run's own error."""
    s = penv.settings()
    try:
        client = client_from_url(s.clickhouse_url, database="default")
        try:
            database = check_identifier(f"siyu_{penv.name}")  # identifiers are not parameters
            client.execute(f"DROP DATABASE IF EXISTS {database}")
        finally:
            client.disconnect()
    except Exception as err:
        print(f"cleanup: could not drop database siyu_{penv.name}: {err!r}", file=sys.stderr)
    try:
        admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, client_id="siyu-bench")
        try:
            mine = [t for t in admin.list_topics() if penv.name in t]
            if mine:
                admin.delete_topics(mine, raise_errors=False)
        finally:
            admin.close()
    except Exception as err:
        print(f"cleanup: could not delete topics of {penv.name}: {err!r}", file=sys.stderr)
    shutil.rmtree(s.data_dir, ignore_errors=True)


@contextmanager
def worker(penv: PipelineEnv, label: str, **env: str) -> Iterator[Worker]:
    """A ready ``siyu worker`` of the namespace; its log is deleted unless the run failed."""
    log = LOGS / f"{label}-{penv.name}.log"
    proc = Worker(penv, log, **env)
    failed = True
    try:
        proc.wait_ready(timeout=180)
        yield proc
        failed = False
    finally:
        proc.stop()
        if failed:
            print(f"worker log kept: {log}", flush=True)
        else:
            log.unlink(missing_ok=True)


def proc_stats(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, resident bytes now, peak resident bytes) of a live process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime
    rss = peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu, rss, peak


def drained(penv: PipelineEnv) -> bool:
    """True when the worker's groups have committed the end of every topic they read, with
    no new message anywhere between two looks: the whole topology has nothing in flight."""
    with Quiescence(penv.settings()) as quiescence:
        return quiescence.quiet()
