"""Live CPU by offered rate: what one worker costs with any traffic, and per event.

``python -m tests.bench.rates`` runs this part alone (``python -m tests.bench`` runs
everything); the local stack must be up. Each run, in a fresh namespace
(:mod:`tests.bench.namespace`), starts one worker with the default settings, then sends events
through the SDK as live traffic (event time = send time, flushed every 50 ms as in
:mod:`tests.bench.latency`) at one rate for
``seconds``. The worker's CPU (``/proc``) counts from the first event sent until the
pipeline is quiet. Rates alternate within a round.

Reported per rate: the CPU per event, and the cores used while traffic flows (that CPU
divided by the seconds of sending). A worker's batches close on window timers, not when
full, so under live traffic its agents handle about as many batches a second at any rate,
and each pays Faust's, aiokafka's and asyncio's machinery. So the CPU per event falls as
the rate rises. A least-squares line through (rate, cores) splits the cost into a part
every worker with traffic pays (cores) and a part per event (µs): what docs/sizing.md
plans with.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from tests.bench import report
from tests.bench.backlog import emitter, paced, scenario_events
from tests.bench.namespace import drained, exit_cleanly_on_sigterm, namespace, proc_stats, worker
from tests.integration.pipeline_env import wait_for

RATES = (500.0, 1_000.0, 2_000.0)


def rates_problem(rates: Sequence[float]) -> str | None:
    """Why ``rates`` cannot give a line (before minutes of runs find out), or None."""
    if len(set(rates)) < 2 or min(rates) <= 0:
        return "--rates takes two different rates above 0 at least"
    return None


def fit(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The least-squares line ``cores = fixed + per_event × rate`` through ``(rate, cores)``
    points: ``(fixed cores, µs per event)``. Needs two different rates at least."""
    rates = [r for r, _ in points]
    if len(set(rates)) < 2:
        raise ValueError("a line needs runs at two different rates at least")
    n = len(points)
    mean_rate = sum(rates) / n
    mean_cores = sum(c for _, c in points) / n
    spread = sum((r - mean_rate) ** 2 for r in rates)
    slope = sum((r - mean_rate) * (c - mean_cores) for r, c in points) / spread
    return mean_cores - slope * mean_rate, slope * 1e6


def rate_run(kafka: str, clickhouse_port: int, rate: float, seconds: float) -> dict[str, Any]:
    """One worker, live traffic at ``rate`` events/s for ``seconds``."""
    n = max(1, round(rate * seconds))
    events = scenario_events(n, n_users=max(200, n // 10))
    with namespace(kafka, clickhouse_port) as penv, worker(penv, "rates") as w:
        with emitter(penv) as sdk:
            cpu0, _, _ = proc_stats(w.proc.pid)
            sent, sending_s = paced(sdk, events, rate, live=True)
        wait_for(lambda: drained(penv), 300, "the pipeline to go quiet", interval=0.3)
        cpu = proc_stats(w.proc.pid)[0] - cpu0
    return {
        "rate": rate,
        "events": sent,
        "sending_s": sending_s,
        "cpu_us_per_event": cpu / sent * 1e6,
        "cores": cpu / sending_s,
    }


def runs(
    kafka: str, clickhouse_port: int, rates: Sequence[float], seconds: float, rounds: int
) -> dict[str, Any]:
    """``rounds`` rounds of one run per rate, and the line through all of them."""
    if problem := rates_problem(rates):
        raise ValueError(problem)
    by_rate: dict[float, list[dict[str, Any]]] = {r: [] for r in rates}
    for k in range(rounds):
        for rate in rates:
            run = rate_run(kafka, clickhouse_port, rate, seconds)
            by_rate[rate].append(run)
            print(
                f"rates round {k + 1}/{rounds}, {rate:,.0f} events/s: {report.line(run)}",
                file=sys.stderr,
                flush=True,
            )
    fixed, per_event = fit([(run["rate"], run["cores"]) for rs in by_rate.values() for run in rs])
    return {
        "seconds": seconds,
        "rounds": rounds,
        "rates": [report.summarise(rs) | {"rate": rate} for rate, rs in by_rate.items()],
        "fixed_cores": fixed,
        "us_per_event": per_event,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates", type=float, nargs="+", default=list(RATES), help="offered events/s"
    )
    parser.add_argument("--seconds", type=float, default=25.0, help="of traffic per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kafka", default="127.0.0.1:19092")
    parser.add_argument("--clickhouse-port", type=int, default=19000)
    args = parser.parse_args()
    if problem := rates_problem(args.rates):
        parser.error(problem)
    exit_cleanly_on_sigterm()
    started = time.monotonic()
    rates = runs(args.kafka, args.clickhouse_port, args.rates, args.seconds, args.rounds)
    results = {
        "meta": report.meta(elapsed_s=round(time.monotonic() - started)),
        "rates": rates,
    }
    print(report.write("rates", results, report.markdown(results)))


if __name__ == "__main__":
    main()
