"""Micro-benchmark of the domain core: events per second through the in-memory Engine.

Not a test: run ``.venv/bin/python tests/bench/domain_bench.py [--events N] [--runs R]``.

A synthetic month of traffic for one brand: many users, KOL clicks, shares and
re-shares, clicks through shares, purchases (some through share links), in
event-time order with jitter within the allowed lateness, and 1% duplicates.
Events are built before timing starts (parsing and validation are the ingest
layer's cost). Timed: routing, every processor step and the messages between
keys, in FIFO delivery with the watermark advanced every ``--batch`` events,
as a Faust agent handling envelopes would. Reported: the median over the runs
of input events per CPU second of this process (the machine may be shared),
and of processor steps (events plus internal messages) per CPU second.
``--roundtrip`` also passes every state and message through JSON, an upper
bound of what changelog-backed tables would add.
Rows are counted and dropped (they leave the process in the pipeline), and
the prepared events are moved out of the garbage collector's way
(``gc.freeze``), so the figure is the domain's own work.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import random
import statistics
import time
from decimal import Decimal

from pipeline.contract.events import AnyEvent, ClickEvent, PurchaseEvent, ShareEvent
from pipeline.domain import Engine, Row

Event = AnyEvent
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def generate(n: int, seed: int = 1) -> list[Event]:
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(max(10, n // 8))]
    kols = [f"k{i}" for i in range(50)]
    span_s = 30 * 86_400
    shares: list[str] = []
    events: list[Event] = []
    common = {"schema_version": 1, "brand_id": "acme"}
    for i in range(n):
        t = START + dt.timedelta(seconds=span_s * i / n + rng.uniform(0, 3600))
        user = rng.choice(users)
        eid = f"e{i}"
        r = rng.random()
        if r < 0.35:
            events.append(
                ClickEvent(
                    event_id=eid,
                    type="click",
                    user_id=user,
                    occurred_at=t,
                    channel="kol_post",
                    kol_id=rng.choice(kols),
                    **common,
                )
            )
        elif r < 0.60:
            share = rng.choice(shares[-2000:]) if shares else None
            events.append(
                ClickEvent(
                    event_id=eid,
                    type="click",
                    user_id=user,
                    occurred_at=t,
                    channel="wechat_group",
                    share_id=share,
                    **common,
                )
            )
        elif r < 0.75:
            sid = f"s{i}"
            parent = rng.choice(shares[-2000:]) if shares and rng.random() < 0.4 else None
            kol = rng.choice(kols) if parent is None and rng.random() < 0.5 else None
            events.append(
                ShareEvent(
                    event_id=eid,
                    type="share",
                    user_id=user,
                    occurred_at=t,
                    channel="wechat_group",
                    share_id=sid,
                    parent_share_id=parent,
                    kol_id=kol,
                    **common,
                )
            )
            shares.append(sid)
        else:
            share = rng.choice(shares[-2000:]) if shares and rng.random() < 0.3 else None
            events.append(
                PurchaseEvent(
                    event_id=eid,
                    type="purchase",
                    user_id=user,
                    occurred_at=t,
                    channel="mini_program",
                    order_id=f"o{i}",
                    amount=Decimal(rng.randint(100, 100_000)) / 100,
                    currency="CNY",
                    share_id=share,
                    **common,
                )
            )
        if rng.random() < 0.01:
            events.append(events[-1])
    return events  # fmt: skip


def run_once(events: list[Event], batch: int, roundtrip: bool) -> tuple[float, float, int, int]:
    rows = 0

    def count(batch_rows: list[Row]) -> None:
        # Rows leave the process in the real pipeline; only count them here.
        nonlocal rows
        rows += len(batch_rows)

    engine = Engine(roundtrip=roundtrip, sink=count)
    gc.collect()
    began, began_cpu = time.perf_counter(), time.process_time()
    engine.feed(events, batch_size=batch)
    cpu = time.process_time() - began_cpu
    return time.perf_counter() - began, cpu, engine.steps, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--roundtrip", action="store_true")
    args = parser.parse_args()
    events = generate(args.events)
    # The prepared input is not the domain's memory: keep the collector off it.
    gc.freeze()
    results = [run_once(events, args.batch, args.roundtrip) for _ in range(args.runs)]
    wall = statistics.median(r[0] for r in results)
    elapsed = statistics.median(r[1] for r in results)
    steps, rows = results[0][2], results[0][3]
    print(
        f"{len(events)} events, {steps} processor steps, {rows} rows"
        f"{' (JSON round trip of states and messages)' if args.roundtrip else ''}"
    )
    print(
        f"median of {args.runs} runs: {elapsed:.2f} s CPU = {len(events) / elapsed:,.0f} events/s, "
        f"{steps / elapsed:,.0f} steps/s, {elapsed / len(events) * 1e6:.1f} µs/event "
        f"(wall clock: {len(events) / wall:,.0f} events/s)"
    )


if __name__ == "__main__":
    main()
