"""Scaling out: the same backlog through one worker, and through two, with and without
standby replicas.

``python -m tests.bench.scaling`` runs this part alone (``python -m tests.bench`` runs
everything); the local stack must be up. Each run, in a fresh namespace
(:mod:`tests.bench.namespace`):

1. ``workers`` ``siyu worker`` processes start on empty topics, with
   ``SIYU_STANDBY_REPLICAS`` set to ``standby``, and the run waits until both consumer
   groups (the topology's and the sink's) are stable with every worker a member, so no
   rebalance falls inside the measurement;
2. the events are sent through the SDK's Kafka emitter as fast as it goes (faster than the
   workers take them, so the workers' speed is what is measured);
3. the clock runs from the first event sent until the last row of the run is visible in
   ClickHouse (the sum of the workers' ``siyu_sink_rows_inserted_total`` reaches its final
   value) and until the pipeline is quiet. The workers' CPU is summed over the same span.

Reported per configuration: events/s, the ratio to one worker in the same round, and the
CPU per event of all workers together. That last figure is what a deployment pays per
event, whatever the number of machines: a standby copy is kept warm by reading its
table's changelog, about one record per event, on another worker.

The workers share this machine's cores with each other and with Kafka and ClickHouse, so
the events/s of two workers say little about two machines; the CPU per event does.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any

from kafka.admin import KafkaAdminClient

from pipeline.contract.events import AnyEvent
from tests.bench import report
from tests.bench.backlog import emit, scenario_events, users_of
from tests.bench.namespace import drained, exit_cleanly_on_sigterm, namespace, proc_stats, worker
from tests.bench.throughput import SINK_FLUSH_SECONDS, RowsSampler, rows_inserted
from tests.integration.pipeline_env import PipelineEnv, wait_for

#: (workers, standby replicas) of each run, in the order of a round.
CONFIGURATIONS: tuple[tuple[int, int], ...] = ((1, 0), (2, 1), (2, 0))


def groups_stable(penv: PipelineEnv, members: int) -> bool:
    """True when the topology's and the sink's consumer groups are both stable with
    ``members`` members each."""
    s = penv.settings()
    groups = [s.app_id, f"{s.app_id}-sink"]
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, client_id="siyu-bench")
    try:
        described = admin.describe_groups(groups)
    finally:
        admin.close()
    return all(
        described.get(g, {}).get("group_state") == "Stable"
        and len(described[g].get("members", [])) == members
        for g in groups
    )


def scaling_run(
    kafka: str, clickhouse_port: int, events: list[AnyEvent], workers: int, standby: int
) -> dict[str, Any]:
    """``events`` through ``workers`` settled workers with ``standby`` standby replicas."""
    n = len(events)
    env = {"SIYU_SINK_FLUSH_SECONDS": SINK_FLUSH_SECONDS, "SIYU_STANDBY_REPLICAS": str(standby)}
    with namespace(kafka, clickhouse_port) as penv, contextlib.ExitStack() as running:
        # A data directory each, as on separate machines (RocksDB locks its files).
        data = penv.settings().data_dir
        procs = [
            running.enter_context(
                worker(penv, f"scaling{i}", SIYU_DATA_DIR=f"{data}/worker-{i}", **env)
            )
            for i in range(workers)
        ]
        wait_for(lambda: groups_stable(penv, workers), 180, "the consumer groups to settle")
        ports = [w.port for w in procs]
        cpu0 = sum(proc_stats(w.proc.pid)[0] for w in procs)
        start = time.perf_counter()
        sampler = RowsSampler(ports, start)
        emit(penv, events)
        wait_for(lambda: drained(penv), 900, "the pipeline to go quiet", interval=0.3)
        quiet_s = time.perf_counter() - start
        cpu = sum(proc_stats(w.proc.pid)[0] for w in procs) - cpu0
        final_rows = rows_inserted(ports)
        visible_s = sampler.all_visible_seconds(final_rows, quiet_s)
    return {
        "workers": workers,
        "standby_replicas": standby,
        "events_per_s": n / visible_s,
        "events_per_s_to_quiet": n / quiet_s,
        "cpu_us_per_event": cpu / n * 1e6,
        "rows_per_event": final_rows / n,
    }


def label(workers: int, standby: int) -> str:
    if workers == 1:
        return "1 worker"
    return f"{workers} workers, " + (
        f"{standby} standby replica{'s' if standby > 1 else ''}" if standby else "no standby"
    )


def runs(kafka: str, clickhouse_port: int, n_events: int, rounds: int) -> dict[str, Any]:
    """``rounds`` rounds of every configuration, alternating, on the same generated events;
    each run also carries its ratio to the one-worker run of its round."""
    events = scenario_events(n_events, n_users=max(200, n_events // 20))
    by_config: dict[str, list[dict[str, Any]]] = {label(*c): [] for c in CONFIGURATIONS}
    for r in range(rounds):
        base: float | None = None
        for workers, standby in CONFIGURATIONS:
            run = scaling_run(kafka, clickhouse_port, events, workers, standby)
            if base is None:
                base = run["events_per_s"]
            run["ratio_to_one_worker"] = run["events_per_s"] / base
            by_config[label(workers, standby)].append(run)
            print(
                f"scaling round {r + 1}/{rounds}, {label(workers, standby)}: {report.line(run)}",
                file=sys.stderr,
                flush=True,
            )
    results: dict[str, Any] = {
        "events": len(events),
        "users": users_of(events),
        "configurations": {name: report.summarise(rs) for name, rs in by_config.items()},
    }
    results["standby_cpu_ratio"] = standby_cpu_ratio(results)
    return results


def standby_cpu_ratio(results: dict[str, Any]) -> float | None:
    """CPU per event of two workers with one standby over two without (medians)."""
    configs = results["configurations"]
    with_standby, without = configs.get(label(2, 1)), configs.get(label(2, 0))
    if not with_standby or not without:
        return None
    return float(
        with_standby["summary"]["cpu_us_per_event"]["median"]
        / without["summary"]["cpu_us_per_event"]["median"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kafka", default="127.0.0.1:19092")
    parser.add_argument("--clickhouse-port", type=int, default=19000)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    scaling = runs(args.kafka, args.clickhouse_port, args.events, args.rounds)
    results = {"meta": report.meta(events=scaling["events"]), "scaling": scaling}
    print(report.write("scaling", results, report.markdown(results)))


if __name__ == "__main__":
    main()
