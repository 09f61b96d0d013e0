"""Where one worker's time goes: py-spy samples of a worker working through a backlog,
or through live traffic.

``python -m tests.bench.profile`` (``make profile``; the local stack must be up). In a fresh
namespace (:mod:`tests.bench.namespace`), generated events are sent through the SDK as a
backlog, one ``siyu worker`` starts on it, and ``py-spy record`` samples every thread of
that worker until the whole topology is quiet. With ``--live RATE`` the worker starts
first and the events arrive as live traffic, ``RATE`` per second with event time = send
time (as in :mod:`tests.bench.latency`), for ``--events / RATE`` seconds: that is what sizing
plans with, and its batches are smaller than a backlog's. Reported, and written under
``tests/bench/results/`` (the raw samples too, for flame graphs: ``py-spy`` raw format):

- the worker's CPU per event over the run (from ``/proc``), to turn shares into µs;
- the share of samples, and µs per event, of each **part** of the worker. A sample counts
  for the first part, in the order of :data:`PARTS`, that has a function on its stack;
- the share of samples of each **thread**: the event loop that runs the agents and the
  Kafka clients (pipeline/worker/faust/aiokafka.py), the sink's ClickHouse insert thread, the rest.
  Only the first runs siyu's processing, and it can use one core at most. py-spy counts a
  thread as busy in some waits (kafka-python's network thread in ``select``), so the
  shares of the quiet threads are upper bounds;
- the functions and the modules with the most samples of their own (self time).

py-spy needs to read the worker's memory (ptrace): root, or ``CAP_SYS_PTRACE`` in a
container. Profiles are relative: compare shares within a run, not across machines.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.bench import report
from tests.bench.backlog import SDK_BATCH, emit, emitter, paced, scenario_events, users_of
from tests.bench.namespace import drained, exit_cleanly_on_sigterm, namespace, proc_stats, worker
from tests.bench.throughput import SINK_FLUSH_SECONDS
from tests.integration.pipeline_env import REPO, wait_for

#: (part, functions that put a sample in it), first match wins: a sample of the domain
#: step inside a state batch is the domain's, the rest of that batch is the agent's own.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ClickHouse client (the sink's insert thread)", ("ClickHouseWriter._insert_sync",)),
    ("publishing output: encoding rows and messages, producing", ("Checkpoint.publish",)),
    ("writing state: encoding states, changelog batches", ("Checkpoint.write_tables",
                                                           "KeyBatch.write_back")),
    ("decoding messages between agents", ("Addressed.from_dict",)),
    ("domain steps (pipeline/domain)", ("KeyBatch.step", "KeyBatch.expire")),
    ("metrics", ("pipeline/metrics.py",)),
    ("ingest: decoding, validating, routing events", ("IngestAgent.ingest_batch",)),
    ("state agents: the rest of a batch", ("StateAgent.state_batch",)),
    ("sink: consuming and decoding row batches", ("SinkService.",)),
)  # fmt: skip
OTHER = "Faust, aiokafka, asyncio and threads (everything else)"

#: (thread, functions that only that thread runs), first match wins.
THREADS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("event loop: agents, Kafka consumer and producer, sink", ("pipeline/cli.py",)),
    ("ClickHouse insert thread", ("ClickHouseWriter._insert_sync",)),
)
OTHER_THREADS = "other threads (kafka-python's admin clients, thread pools)"

_FRAME = re.compile(r"(?P<func>.*?) \((?P<file>.*?):\d+\)")


def _frame(raw: str) -> tuple[str, str]:
    """(function, file) of one py-spy raw-format frame. py-spy names files relative to the
    ``sys.path`` entry they were found under (``pipeline/worker/topology.py``,
    ``aiokafka/conn.py``, ``asyncio/events.py``); an absolute path is cut the same way."""
    m = _FRAME.match(raw)
    if not m:
        return raw, ""
    path = m.group("file")
    if path.startswith("/"):
        for marker in ("site-packages/", f"{REPO}/", "/lib/python3."):
            if marker in path:
                path = path.split(marker, 1)[1]
                if marker == "/lib/python3.":
                    path = path.split("/", 1)[-1]  # past "11/"
                break
    return m.group("func"), path


def _module(path: str) -> str:
    """What self time is summed by: a siyu file, or an installed package or stdlib module."""
    return path if path.startswith("pipeline/") else path.split("/", 1)[0]


def analyse(raw_path: Path, top: int) -> dict[str, Any]:
    """Parts, top functions and top modules of a py-spy raw file (``stack count`` lines)."""
    parts: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    modules: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        part = next((name for name, markers in PARTS if any(m in stack for m in markers)), OTHER)
        parts[part] += n
        thread = next((t for t, markers in THREADS if any(m in stack for m in markers)), None)
        threads[thread or OTHER_THREADS] += n
        func, path = _frame(frames[-1])
        functions[f"{func} ({path})"] += n
        modules[_module(path)] += n
    return {
        "samples": total,
        "parts": {name: parts[name] / total for name, _ in (*PARTS, (OTHER, ()))} if total else {},
        "threads": (
            {name: threads[name] / total for name, _ in (*THREADS, (OTHER_THREADS, ()))}
            if total
            else {}
        ),
        "functions": [(f, n / total) for f, n in functions.most_common(top)] if total else [],
        "modules": [(m, n / total) for m, n in modules.most_common(top)] if total else [],
    }


def markdown(results: dict[str, Any]) -> str:
    meta, p = results["meta"], results["profile"]
    us = p["cpu_us_per_event"]
    live = meta.get("live_rate")
    how = f"as live traffic at {live:,.0f} events/s" if live else "as a backlog"
    lines = [
        f"# Where one worker's time goes, {meta['when']}",
        "",
        meta["setup"],
        "",
        f"{meta['events']:,} events ({meta['users']:,} users) {how}; one worker until "
        f"quiet: {p['seconds']:.1f} s, {meta['events'] / p['seconds']:,.0f} events/s, "
        f"**{us:.0f} µs of CPU per event**; {p['samples']:,} py-spy samples at "
        f"{p['rate']} Hz, every thread.",
        "",
        "| part | share of samples | µs per event |",
        "|---|---:|---:|",
        *[f"| {name} | {share:.1%} | {share * us:.0f} |" for name, share in p["parts"].items()],
        "",
        "| thread | share of samples | µs per event |",
        "|---|---:|---:|",
        *[f"| {name} | {share:.1%} | {share * us:.0f} |" for name, share in p["threads"].items()],
        "",
        "| function (self time) | share |",
        "|---|---:|",
        *[f"| `{f}` | {share:.1%} |" for f, share in p["functions"]],
        "",
        "| module (self time) | share |",
        "|---|---:|",
        *[f"| `{m}` | {share:.1%} |" for m, share in p["modules"]],
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument(
        "--users", type=int, help="distinct users (default: one per 20 events, at least 200)"
    )
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25, help="functions and modules listed")
    parser.add_argument("--sdk-batch", type=int, default=SDK_BATCH, help="events per SDK batch")
    parser.add_argument(
        "--live",
        type=float,
        metavar="RATE",
        help="send the events as live traffic at RATE events/s to a running worker",
    )
    parser.add_argument("--kafka", default="127.0.0.1:19092")
    parser.add_argument("--clickhouse-port", type=int, default=19000)
    args = parser.parse_args()
    if args.live is not None and args.live <= 0:
        parser.error("--live takes a rate above 0 events/s")
    if args.users is not None and args.users < 1:
        parser.error("--users takes at least 1")
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.exit("py-spy is not installed: pip install 'siyu[dev]' (make install does)")
    exit_cleanly_on_sigterm()
    users = args.users if args.users is not None else max(200, args.events // 20)
    events = scenario_events(args.events, n_users=users)
    meta = report.meta(
        events=len(events), users=users_of(events), sdk_batch=args.sdk_batch, live_rate=args.live
    )
    report.RESULTS.mkdir(exist_ok=True)
    raw = report.RESULTS / f"profile-{meta['when']}.txt"
    with namespace(args.kafka, args.clickhouse_port) as penv:
        if args.live is None:
            emit(penv, events, args.sdk_batch)
        with worker(penv, "profile", SIYU_SINK_FLUSH_SECONDS=SINK_FLUSH_SECONDS) as w:
            cpu0, _, _ = proc_stats(w.proc.pid)
            start = time.perf_counter()
            record = [spy, "record", "-p", str(w.proc.pid), "-o", str(raw), "--format", "raw"]
            sampler = subprocess.Popen(
                [*record, "-r", str(args.rate), "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                if args.live is not None:
                    with emitter(penv) as sdk:
                        paced(sdk, events, args.live, live=True)
                wait_for(lambda: drained(penv), 900, "the pipeline to go quiet", interval=0.3)
            finally:
                seconds = time.perf_counter() - start
                cpu1, _, _ = proc_stats(w.proc.pid)
                sampler.send_signal(2)  # py-spy writes its file on SIGINT
                _, err = sampler.communicate(timeout=60)
    if not raw.exists():
        sys.exit(f"py-spy wrote no samples: {err.decode(errors='replace').strip()}")
    profile = analyse(raw, args.top)
    profile.update(
        seconds=seconds,
        rate=args.rate,
        cpu_us_per_event=(cpu1 - cpu0) / len(events) * 1e6,
        raw_samples=str(raw),
    )
    results = {"meta": meta, "profile": profile}
    print(report.write("profile", results, markdown(results)))


if __name__ == "__main__":
    main()
