"""Event time to visible in ClickHouse, at a fixed offered rate, for one worker.

Live traffic rather than a backlog: a sender tracks events through the SDK's Kafka
emitter at ``rate`` events per second, each stamped with ``occurred_at`` = the moment it
is tracked, and flushes the emitter every 50 ms (:data:`tests.bench.backlog.TICK`; an event
waits at most that long in the SDK, as with a backend that flushes on a timer). A poller
asks ClickHouse every ``poll`` seconds which of those events have an ``events`` row, and
notes for each event id the first poll that returned it. Latency of an event = that poll's
return time minus its event time, on the same clock (one process).

Resolution: an event became visible somewhere between the previous poll and the poll
that saw it, so each figure is an upper bound, high by at most one poll period plus one
query (both reported). The poll asks only for events at or after the oldest event not yet
seen (``occurred_at`` in whole seconds), so it stays cheap however long the run.

Where the time goes, coarsely: the worker stamps each ``events`` row with ``ingested_at``,
the wall-clock second its ingest agent accepted the event. ``ingested_at + 0.5 s`` minus
the event time estimates the part before the worker (SDK, Kafka, the ingest agent's
fetch and batching) to within half a second; the rest is the row's way through the rows
topic and the sink's batching into ClickHouse.

Events sent during the first ``warmup`` seconds are not measured (the worker's first
fetches, caches and inserts); the next ``duration`` seconds are. After the sender
stops, the poller waits up to ``settle`` seconds for the last measured events; any that
never show up are reported as missing (and fail the target: nothing may be lost).
"""

from __future__ import annotations

import argparse
import collections
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.sink.clickhouse import client_from_url
from tests.bench import report
from tests.bench.backlog import TICK, emitter, paced, scenario_events
from tests.bench.namespace import exit_cleanly_on_sigterm, namespace, proc_stats, worker
from tests.bench.throughput import SINK_FLUSH_SECONDS
from tests.integration.pipeline_env import PipelineEnv

_ACCEPTED_SINCE = (
    "SELECT event_id, toUInt32(ingested_at) FROM events WHERE occurred_at >= toDateTime(%(since)s)"
)
_VISIBLE_SINCE = "SELECT event_id FROM events WHERE occurred_at >= toDateTime(%(since)s)"


@dataclass
class _Ledger:
    """Send times of events, and when each was first seen, shared by sender and poller."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: dict[str, float] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    #: Sent event ids in send order; the left end is the oldest one not yet seen.
    order: collections.deque[str] = field(default_factory=collections.deque)

    def record(self, event_id: str, t: float) -> None:
        with self.lock:
            self.sent[event_id] = t
            self.order.append(event_id)

    def oldest_unseen(self) -> float | None:
        with self.lock:
            while self.order and self.order[0] in self.seen:
                self.order.popleft()
            return self.sent[self.order[0]] if self.order else None


class _Poller(threading.Thread):
    """Polls ClickHouse for newly visible events until stopped."""

    def __init__(self, penv: PipelineEnv, ledger: _Ledger, period: float) -> None:
        super().__init__(name="bench-latency-poller", daemon=True)
        self.client = client_from_url(penv.settings().clickhouse_url)
        self.ledger = ledger
        self.period = period
        self.stopping = threading.Event()
        self.polls = 0
        self.query_seconds = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                began = time.perf_counter()
                self.poll_once()
                spent = time.perf_counter() - began
                self.stopping.wait(max(0.0, self.period - spent))
        except BaseException as err:  # reported by the main thread
            self.error = err
        finally:
            self.client.disconnect()

    def poll_once(self) -> None:
        oldest = self.ledger.oldest_unseen()
        if oldest is None:
            return
        began = time.perf_counter()
        rows = self.client.execute(_VISIBLE_SINCE, {"since": int(oldest) - 1})
        now = time.time()
        self.query_seconds += time.perf_counter() - began
        self.polls += 1
        with self.ledger.lock:
            for (event_id,) in rows:
                if event_id in self.ledger.sent and event_id not in self.ledger.seen:
                    self.ledger.seen[event_id] = now


def _accepted(penv: PipelineEnv, since: float) -> dict[str, int]:
    """``ingested_at`` (whole seconds) of the events from ``since`` on, by event id."""
    client = client_from_url(penv.settings().clickhouse_url)
    try:
        rows = client.execute(_ACCEPTED_SINCE, {"since": int(since) - 1})
    finally:
        client.disconnect()
    return {event_id: int(t) for event_id, t in rows}


def latency_run(
    kafka: str,
    clickhouse_port: int,
    rate: float,
    warmup: float = 10.0,
    duration: float = 30.0,
    poll: float = 0.1,
    settle: float = 60.0,
) -> dict[str, Any]:
    """One worker under ``rate`` events/s of live traffic; latency percentiles and counts."""
    total = warmup + duration
    pool = scenario_events(int(rate * total * 1.1) + 100, n_users=max(200, int(rate * total) // 20))
    ledger = _Ledger()
    with (
        namespace(kafka, clickhouse_port) as penv,
        worker(penv, "latency", SIYU_SINK_FLUSH_SECONDS=SINK_FLUSH_SECONDS) as w,
    ):
        poller = _Poller(penv, ledger, poll)
        poller.start()
        cpu0, _, _ = proc_stats(w.proc.pid)
        window = (time.time() + warmup, time.time() + total)
        with emitter(penv) as sdk:
            sent, send_seconds = paced(sdk, pool, rate, total, live=True, on_track=ledger.record)
        cpu1, _, _ = proc_stats(w.proc.pid)
        measured = [e for e, t in ledger.sent.items() if window[0] <= t < window[1]]
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline and poller.is_alive():
            with ledger.lock:
                if all(e in ledger.seen for e in measured):
                    break
            time.sleep(poll)
        poller.stopping.set()
        poller.join()
        if poller.error is not None:
            raise poller.error
        accepted = _accepted(penv, window[0])
    latencies = [ledger.seen[e] - ledger.sent[e] for e in measured if e in ledger.seen]
    to_worker = [accepted[e] + 0.5 - ledger.sent[e] for e in measured if e in accepted]
    return {
        "offered_events_per_s": rate,
        "sent_events_per_s": sent / send_seconds,
        "measured": len(measured),
        "missing": len(measured) - len(latencies),
        "p50_s": report.percentile(latencies, 50),
        "p95_s": report.percentile(latencies, 95),
        "p99_s": report.percentile(latencies, 99),
        "max_s": max(latencies, default=math.nan),
        "to_worker_p50_s": report.percentile(to_worker, 50),
        "to_worker_p99_s": report.percentile(to_worker, 99),
        "poll_period_ms": 1000 * poll,
        "mean_query_ms": 1000 * poller.query_seconds / max(1, poller.polls),
        "worker_cpu_percent": 100 * (cpu1 - cpu0) / send_seconds,
        # Live traffic's cost, which sizing plans with: smaller batches than a backlog's.
        "worker_cpu_us_per_event": 1e6 * (cpu1 - cpu0) / max(1, sent),
    }


def note(rate: float, warmup: float, duration: float, poll: float) -> str:
    """What the latency table means, for the report."""
    return (
        f"Offered rate {rate:,.0f} events/s, sent through the SDK (flushed every "
        f"{TICK * 1000:.0f} ms) with event time = send time; {warmup:.0f} s of warm-up, then "
        f"{duration:.0f} s measured. Visible = the event's row is returned by "
        f"`SELECT ... FROM events`, polled every {poll * 1000:.0f} ms: each latency is an "
        "upper bound, high by at most one poll period plus one query."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True, help="offered events per second")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--kafka", default="127.0.0.1:19092")
    parser.add_argument("--clickhouse-port", type=int, default=19000)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    runs = []
    for r in range(args.runs):
        run = latency_run(args.kafka, args.clickhouse_port, args.rate, args.warmup, args.duration)
        runs.append(run)
        print(f"latency run {r + 1}/{args.runs}: {report.line(run)}", file=sys.stderr)
    latency = report.summarise(runs)
    latency["note"] = note(args.rate, args.warmup, args.duration, 0.1)
    results = {"meta": report.meta(), "latency": latency}
    print(report.write("latency", results, report.markdown(results)))


if __name__ == "__main__":
    main()
