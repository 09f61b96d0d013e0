"""End-to-end throughput of one worker, against a plain consumer in the same run.

Not a test: ``make bench`` (or ``.venv/bin/python -m bench.throughput``) with the local stack
up. For each run, in a fresh namespace (topics, consumer groups, database):

1. the same events are produced once, as envelopes of ``--envelope`` events, to the events
   topic (a backlog, so consumption speed is what is measured);
2. **ceiling**: a plain aiokafka consumer reads the backlog and parses and validates every
   event (orjson + Pydantic, :func:`pipeline.events.decode_message`), nothing else;
3. **siyu**: one ``siyu worker`` process consumes the same backlog through the full topology
   (ingest, user/share/sharer state agents with tables, the ClickHouse sink) until every
   event is visible in ClickHouse and every consumer group has committed the end of its
   topics.

Reported per run: events/s of each, the ratio, the worker's CPU seconds per event and its
peak memory. Medians over ``--runs`` runs with min/max, written to ``bench/results/`` as
JSON and Markdown. The machine is shared and noisy: read ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from kafka import KafkaProducer

from pipeline.events import decode_message, encode_envelope
from pipeline.sink.clickhouse import client_from_url
from tests.integration.pipeline_env import PipelineEnv, Worker, wait_for
from tests.integration.test_topology import quiescent
from tests.scenario import generate

RESULTS = Path(__file__).resolve().parent / "results"


def produce(penv: PipelineEnv, events: list[Any], envelope: int) -> int:
    s = penv.settings()
    topics = penv.siyu("topics")
    if topics.returncode != 0:
        raise SystemExit(topics.stderr)
    producer = KafkaProducer(
        bootstrap_servers=s.kafka_bootstrap,
        acks="all",
        linger_ms=20,
        max_request_size=16 * 1024 * 1024,
        batch_size=1024 * 1024,
    )
    n = 0
    for i in range(0, len(events), envelope):
        producer.send(s.topic_events, encode_envelope(events[i : i + envelope]))
        n += 1
    producer.flush()
    producer.close()
    return n


async def ceiling(penv: PipelineEnv, expected: int) -> float:
    """Seconds for a plain consumer to parse and validate ``expected`` events."""
    s = penv.settings()
    consumer = AIOKafkaConsumer(
        s.topic_events,
        bootstrap_servers=s.kafka_bootstrap,
        group_id=f"{penv.name}-ceiling",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 << 20,
    )
    await consumer.start()
    try:
        seen = 0
        start = None
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=1000)
            if start is None and batches:
                start = time.perf_counter()
            for messages in batches.values():
                for msg in messages:
                    seen += len(decode_message(msg.value or b"").events)
        assert start is not None
        return time.perf_counter() - start
    finally:
        await consumer.stop()


def _proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = 100.0
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu, peak


def siyu_run(penv: PipelineEnv, expected: int, log: Path) -> tuple[float, float, int]:
    """(seconds, worker CPU seconds, worker peak RSS) to get ``expected`` events through."""
    s = penv.settings()
    worker = Worker(penv, log, SIYU_SINK_FLUSH_SECONDS="1.0")
    try:
        worker.wait_ready()
        cpu0, _ = _proc_stats(worker.proc.pid)
        start = time.perf_counter()
        client = client_from_url(s.clickhouse_url)

        def visible() -> bool:
            return bool(client.execute("SELECT count() FROM events_unique")[0][0] >= expected)

        wait_for(visible, 900, f"{expected} events in ClickHouse", interval=0.2)
        wait_for(lambda: quiescent(penv), 900, "the pipeline to go quiet", interval=0.5)
        elapsed = time.perf_counter() - start
        cpu1, peak = _proc_stats(worker.proc.pid)
        client.disconnect()
        return elapsed, cpu1 - cpu0, peak
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--envelope", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kafka", default="127.0.0.1:19092")
    parser.add_argument("--clickhouse-port", type=int, default=19000)
    args = parser.parse_args()

    # Dense traffic (about 3 events per second of event time) keeps the whole log inside
    # the allowed lateness, as a live campaign day would be.
    events = generate(
        seed=8,
        n_events=args.events,
        n_users=max(200, args.events // 20),
        spacing_s=1,
        max_delay_s=60,
        duplicate_rate=0.0,
        heavy_share=0.05,
    ).events
    runs: list[dict[str, float]] = []
    for r in range(args.runs):
        penv = PipelineEnv.fresh(args.kafka, args.clickhouse_port)
        migrated = penv.siyu("migrate")
        if migrated.returncode != 0:
            raise SystemExit(migrated.stderr)
        messages = produce(penv, events, args.envelope)
        ceiling_s = asyncio.run(ceiling(penv, len(events)))
        log = RESULTS / f"worker-{penv.name}.log.tmp"
        RESULTS.mkdir(exist_ok=True)
        siyu_s, cpu_s, peak = siyu_run(penv, len(events), log)
        run = {
            "ceiling_events_per_s": len(events) / ceiling_s,
            "siyu_events_per_s": len(events) / siyu_s,
            "ratio": ceiling_s / siyu_s,
            "worker_cpu_us_per_event": cpu_s / len(events) * 1e6,
            "worker_peak_rss_mib": peak / 2**20,
        }
        runs.append(run)
        print(
            f"run {r + 1}: {messages} messages, "
            + ", ".join(f"{k}={v:,.2f}" for k, v in run.items()),
            file=sys.stderr,
        )
        client = client_from_url(penv.settings().clickhouse_url, database="default")
        client.execute(f"DROP DATABASE IF EXISTS siyu_{penv.name}")
        client.disconnect()

    summary = {
        k: {
            "median": statistics.median(r[k] for r in runs),
            "min": min(r[k] for r in runs),
            "max": max(r[k] for r in runs),
        }
        for k in runs[0]
    }
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    meta = {"events": len(events), "envelope": args.envelope, "runs": args.runs, "when": stamp}
    (RESULTS / f"throughput-{stamp}.json").write_text(
        json.dumps({"meta": meta, "runs": runs, "summary": summary}, indent=2) + "\n"
    )
    lines = [
        f"# Throughput, one worker ({len(events):,} events in envelopes of {args.envelope}, "
        f"{args.runs} runs, {stamp})",
        "",
        "| figure | median | min | max |",
        "|---|---:|---:|---:|",
        *(
            f"| {k} | {v['median']:,.2f} | {v['min']:,.2f} | {v['max']:,.2f} |"
            for k, v in summary.items()
        ),
    ]
    table = "\n".join(lines) + "\n"
    (RESULTS / f"throughput-{stamp}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
