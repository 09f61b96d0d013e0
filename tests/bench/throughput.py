"""Throughput of one worker end to end, against a plain consumer of the same backlog.

``python -m tests.bench.throughput`` runs this part alone (``python -m tests.bench`` runs
everything); the local stack must be up. Each run, in a fresh namespace
(:mod:`tests.bench.namespace`):

1. the events are sent through the SDK's Kafka emitter (:mod:`tests.bench.backlog`) as a
   backlog, so consumption speed is what is measured;
2. **ceiling**: a plain aiokafka consumer reads the backlog and parses and validates every
   event (orjson + Pydantic, :func:`pipeline.contract.events.decode_message`), nothing else, again
   and again until it has worked for three seconds (one pass is too short to time);
3. **siyu**: one ``siyu worker`` process, started on the backlog, runs the full topology
   (ingest, the user/share/sharer state agents with their tables, the ClickHouse sink)
   until every event is visible in ClickHouse and every consumer group has committed the
   end of its topics.

Reported per run: events/s of each and their ratio, the worker's CPU seconds per event
and its peak resident memory. The clock of the worker starts when it reports ready. It is
read at three moments:

- **all rows visible**: the last row the run produces (events, loyalty snapshots, credits,
  chains, referrers, promotions) was accepted by ClickHouse. The worker's
  ``siyu_sink_rows_inserted_total`` is sampled every 0.1 s; this is the first sample that
  shows the total it has once the pipeline is quiet. This is issue 8's "until the event
  count is fully visible in ClickHouse", and the figure the verdict uses;
- **quiet**: every consumer group has also committed the end of its topics. Offsets are
  committed every second, and quiet needs two identical looks, so this comes up to about
  1.5 s after the work is done: a conservative upper bound;
- **events visible**: every ``events`` row is in (ingest alone).

The machine is shared and noisy: read ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer

from pipeline.contract.events import AnyEvent, decode_message
from pipeline.settings import Settings
from pipeline.sink.clickhouse import client_from_url
from tests.bench import report
from tests.bench.backlog import SDK_BATCH, emit, scenario_events, users_of
from tests.bench.namespace import drained, exit_cleanly_on_sigterm, namespace, proc_stats, worker
from tests.integration.pipeline_env import PipelineEnv, by, scrape, wait_for

#: Sink flush interval of the worker: the production default (the test helpers use less).
SINK_FLUSH_SECONDS = str(Settings.model_fields["sink_flush_seconds"].default)


#: Least seconds of work the ceiling is timed over: it reads the backlog again until then,
#: because one pass of a small backlog takes a fraction of a second and the figure would
#: be mostly noise.
CEILING_MIN_SECONDS = 3.0


async def ceiling(penv: PipelineEnv, expected: int) -> float:
    """Events per second of a plain consumer parsing and validating the backlog of
    ``expected`` events, read whole as many times as it takes to fill
    :data:`CEILING_MIN_SECONDS` (from its first fetched message)."""
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
        total = 0
        start = None
        while True:
            seen = 0
            while seen < expected:
                batches = await consumer.getmany(timeout_ms=1000, max_records=1000)
                if start is None and batches:
                    start = time.perf_counter()
                for messages in batches.values():
                    for msg in messages:
                        seen += len(decode_message(msg.value or b"").events)
            total += seen
            assert start is not None
            elapsed = time.perf_counter() - start
            if elapsed >= CEILING_MIN_SECONDS:
                return total / elapsed
            await consumer.seek_to_beginning()
    finally:
        await consumer.stop()


#: Seconds between samples of the worker's inserted-rows counter.
ROWS_SAMPLE_SECONDS = 0.1


def rows_inserted(ports: Sequence[int]) -> int:
    """The workers' ``siyu_sink_rows_inserted_total``, summed over tables and workers."""
    return sum(sum(by(scrape(port), "siyu_sink_rows_inserted_total").values()) for port in ports)


class RowsSampler:
    """Samples :func:`rows_inserted` in a thread: (seconds since ``start``, total)."""

    def __init__(self, ports: Sequence[int], start: float) -> None:
        self.ports, self.start = ports, start
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(ROWS_SAMPLE_SECONDS):
            try:
                total = rows_inserted(self.ports)
            except OSError:
                continue
            self.samples.append((time.perf_counter() - self.start, total))

    def all_visible_seconds(self, final: int, otherwise: float) -> float:
        """When the total first reached ``final``, the total after the pipeline went quiet;
        ``otherwise`` (the quiet time) when no sample saw it, every scrape having failed."""
        self._stop.set()
        self._thread.join()
        return next((t for t, total in self.samples if total >= final), otherwise)


def siyu_run(penv: PipelineEnv, expected: int) -> dict[str, float]:
    """One worker through the backlog: seconds to visible and to quiet, CPU, memory."""
    with worker(penv, "throughput", SIYU_SINK_FLUSH_SECONDS=SINK_FLUSH_SECONDS) as w:
        cpu0, rss0, _ = proc_stats(w.proc.pid)
        start = time.perf_counter()
        sampler = RowsSampler([w.port], start)
        client = client_from_url(penv.settings().clickhouse_url)
        try:

            def visible() -> bool:
                rows = client.execute("SELECT count() FROM events_unique")
                return bool(rows[0][0] >= expected)

            wait_for(visible, 900, f"{expected} events in ClickHouse", interval=0.2)
        finally:
            client.disconnect()
        visible_s = time.perf_counter() - start
        wait_for(lambda: drained(penv), 900, "the pipeline to go quiet", interval=0.3)
        elapsed = time.perf_counter() - start
        cpu1, _, peak = proc_stats(w.proc.pid)
        final_rows = rows_inserted([w.port])
        all_visible_s = sampler.all_visible_seconds(final_rows, elapsed)
    return {
        "seconds": elapsed,
        "visible_seconds": visible_s,
        "all_visible_seconds": all_visible_s,
        "rows": final_rows,
        "cpu_seconds": cpu1 - cpu0,
        "rss_ready_bytes": rss0,
        "peak_rss_bytes": peak,
    }


def one_run(
    kafka: str, clickhouse_port: int, events: list[AnyEvent], sdk_batch: int
) -> dict[str, Any]:
    """A full throughput run in a fresh namespace; the figures of :func:`report.summarise`."""
    n = len(events)
    with namespace(kafka, clickhouse_port) as penv:
        messages = emit(penv, events, sdk_batch)
        ceiling_rate = asyncio.run(ceiling(penv, n))
        siyu = siyu_run(penv, n)
    return {
        "ceiling_events_per_s": ceiling_rate,
        "siyu_events_per_s": n / siyu["all_visible_seconds"],
        "siyu_events_per_s_to_quiet": n / siyu["seconds"],
        "siyu_events_per_s_to_visible": n / siyu["visible_seconds"],
        "ratio_to_ceiling": n / siyu["all_visible_seconds"] / ceiling_rate,
        "rows_per_event": siyu["rows"] / n,
        "worker_cpu_us_per_event": siyu["cpu_seconds"] / n * 1e6,
        "worker_peak_rss_mib": siyu["peak_rss_bytes"] / 2**20,
        "worker_ready_rss_mib": siyu["rss_ready_bytes"] / 2**20,
        "events_per_message": n / messages,
    }


def throughput_events(n_events: int) -> list[AnyEvent]:
    """The events every throughput run sends: ``n_events`` of them, 20 per user."""
    return scenario_events(n_events, n_users=max(200, n_events // 20))


def runs(
    kafka: str,
    clickhouse_port: int,
    events: list[AnyEvent],
    n_runs: int,
    sdk_batch: int = SDK_BATCH,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``n_runs`` throughput runs on ``events`` (:func:`throughput_events`): (meta, per-run
    figures)."""
    meta = {"events": len(events), "users": users_of(events), "sdk_batch": sdk_batch}
    out = []
    for r in range(n_runs):
        run = one_run(kafka, clickhouse_port, events, sdk_batch)
        out.append(run)
        print(f"throughput run {r + 1}/{n_runs}: {report.line(run)}", file=sys.stderr, flush=True)
    return meta, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sdk-batch", type=int, default=SDK_BATCH, help="events per SDK batch")
    parser.add_argument("--kafka", default="127.0.0.1:19092")
    parser.add_argument("--clickhouse-port", type=int, default=19000)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    events = throughput_events(args.events)
    meta, per_run = runs(args.kafka, args.clickhouse_port, events, args.runs, args.sdk_batch)
    results = {"meta": report.meta(**meta), "throughput": report.summarise(per_run)}
    print(report.write("throughput", results, report.markdown(results)))


if __name__ == "__main__":
    main()
