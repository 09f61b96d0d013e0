"""State size per user and ClickHouse rows per event, measured on the pure domain core.

Not a test: ``.venv/bin/python -m tests.bench.state_size [--events N ...]`` (Linux: reads
``/proc/self/statm``). Figures for ``docs/sizing.md``.

The traffic is :func:`tests.bench.domain_bench.generate`'s synthetic month for one brand (8 events
per user on average; 35% KOL clicks, 25% share clicks, 15% shares, 25% purchases; 1%
duplicates). It runs through :class:`pipeline.domain.Engine` in batches of ``--batch`` events,
as a worker's agents would, and at the end the engine holds the state of every key: what a
worker's tables hold for the keys it owns. Reported, for each ``--events`` size:

- keys per processor (users, shares, sharers) and **serialised state bytes**: table key plus
  the orjson encoding the topology writes to its tables (``pipeline/worker/topology.py``). This is
  what a RocksDB table stores (before RocksDB's own compression) and what the changelog
  topics carry, once per key;
- **resident memory** the process gained while building the states (RSS after minus RSS
  before, the prepared events already allocated). A worker keeps the parsed states of every
  key it owns between batches (``StateCache`` in the topology), so this is the memory a
  worker needs for its users, whatever the table store;
- **rows per event** the domain emits, by ClickHouse table, after the sink's coalescing of
  snapshots within a batch (``coalesce_snapshots``), plus one ``events`` row per event.

Each size runs in a fresh process, so one size's garbage does not flatter the next.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import orjson

from pipeline.domain import Engine, ProcessorName, Row, coalesce_snapshots
from tests.bench.domain_bench import generate

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def measure(n_events: int, batch: int) -> dict[str, Any]:
    """Build the states of ``n_events`` synthetic events; sizes, memory and row counts."""
    events = generate(n_events)
    gc.collect()
    gc.freeze()  # the prepared input is not state: keep the collector off it
    pending: list[Row] = []
    engine = Engine(sink=pending.extend)
    rows: Counter[str] = Counter()
    rows_uncoalesced: Counter[str] = Counter()
    before = rss_bytes()
    for i in range(0, len(events), batch):
        engine.feed(events[i : i + batch], batch_size=batch)
        rows_uncoalesced.update(r.table for r in pending)
        rows.update(r.table for r in coalesce_snapshots(pending))
        pending.clear()
    gc.collect()
    grown = rss_bytes() - before
    keys: dict[str, int] = {}
    state_bytes: dict[str, int] = {}
    for name, processor in engine.processors.items():
        table = engine.states[name]
        keys[name.value] = len(table)
        state_bytes[name.value] = sum(
            len(f"{brand}\x1f{key}".encode()) + len(orjson.dumps(processor.state_to_dict(s)))
            for (brand, key), s in table.items()
        )
    rows["events"] = len(events)
    rows_uncoalesced["events"] = len(events)
    return {
        "events": len(events),
        "users": keys[ProcessorName.USER.value],
        "keys": keys,
        "state_bytes": state_bytes,
        "rss_growth_bytes": grown,
        "rows": dict(rows),
        "rows_uncoalesced": dict(rows_uncoalesced),
    }


def report(m: dict[str, Any]) -> str:
    users = m["users"]
    per_100k = 100_000 / users
    total_state = sum(m["state_bytes"].values())
    per_1m_events = 1e6 / m["events"]
    lines = [
        f"{m['events']:,} events, {users:,} users, keys: "
        + ", ".join(f"{k} {v:,}" for k, v in m["keys"].items()),
        "  serialised state: "
        + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in m["state_bytes"].items())
        + f"; total {total_state / 2**20:.1f} MiB = {total_state / users:,.0f} B per user"
        + f" = {total_state * per_100k / 2**20:.1f} MiB per 100k users",
        f"  resident memory gained: {m['rss_growth_bytes'] / 2**20:.1f} MiB"
        f" = {m['rss_growth_bytes'] / users:,.0f} B per user"
        f" = {m['rss_growth_bytes'] * per_100k / 2**20:.1f} MiB per 100k users",
        "  ClickHouse rows per 1M events (snapshots coalesced per batch; uncoalesced): "
        + ", ".join(
            f"{t} {n * per_1m_events:,.0f} ({m['rows_uncoalesced'][t] * per_1m_events:,.0f})"
            for t, n in sorted(m["rows"].items())
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, nargs="+", default=[200_000, 400_000], help="sizes to measure"
    )
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: measure one size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batch)))
        return
    for n in args.events:
        child = [sys.executable, "-m", "tests.bench.state_size", "--one", str(n), "--batch"]
        out = subprocess.run([*child, str(args.batch)], check=True, capture_output=True)
        print(report(json.loads(out.stdout)), flush=True)


if __name__ == "__main__":
    main()
