"""Summaries of repeated runs, the Markdown table, the verdict, and the files under results/.

Every figure of a repeated measurement is reported as median, min and max over the runs,
never as a single best run. One run of ``python -m tests.bench`` writes one JSON file (every
run's raw figures, the summaries and the setup) and one Markdown file (the table printed
at the end), both named by the UTC time the run started.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

#: Targets of issue 8.
MIN_RATIO_TO_CEILING = 0.30
MAX_P99_SECONDS = 5.0


def stamp() -> str:
    """UTC time now, for file names: 20261123T210811Z."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"summary": {figure: {median, min, max}}, "runs": runs}`` over numeric figures."""
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)] if runs else []
    summary = {
        k: {
            "median": statistics.median(r[k] for r in runs),
            "min": min(r[k] for r in runs),
            "max": max(r[k] for r in runs),
        }
        for k in keys
    }
    return {"summary": summary, "runs": list(runs)}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def line(run: dict[str, Any]) -> str:
    """One run's figures on one line (progress output)."""
    return ", ".join(
        f"{k}={v:,.2f}" if isinstance(v, float) else f"{k}={v}"
        for k, v in run.items()
        if isinstance(v, int | float | str)
    )


def _fmt(v: float, digits: int = 0) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{digits}f}"


def _row(label: str, s: dict[str, float], digits: int = 0, extra: str | None = None) -> str:
    cells = [_fmt(s["median"], digits), _fmt(s["min"], digits), _fmt(s["max"], digits)]
    return f"| {label} | " + " | ".join([*cells, *([] if extra is None else [extra])]) + " |"


def throughput_table(t: dict[str, Any]) -> list[str]:
    s = t["summary"]
    ceiling = s["ceiling_events_per_s"]["median"]

    def vs_ceiling(key: str) -> str:
        return f"{s[key]['median'] / ceiling:.1%}"

    return [
        "| figure | median | min | max | of the ceiling (medians) |",
        "|---|---:|---:|---:|---:|",
        _row("ceiling: plain aiokafka consumer, parse + validate, events/s",
             s["ceiling_events_per_s"], extra="100%"),
        _row("siyu, one worker, SDK → Kafka → topology → ClickHouse, until all rows are "
             "visible, events/s", s["siyu_events_per_s"], extra=vs_ceiling("siyu_events_per_s")),
        _row("siyu, until every consumer group has committed (quiet), events/s",
             s["siyu_events_per_s_to_quiet"], extra=vs_ceiling("siyu_events_per_s_to_quiet")),
        _row("siyu, until every `events` row is visible, events/s",
             s["siyu_events_per_s_to_visible"], extra=vs_ceiling("siyu_events_per_s_to_visible")),
        _row("ratio to the ceiling in the same run", s["ratio_to_ceiling"], 3, ""),
        _row("worker CPU, µs per event", s["worker_cpu_us_per_event"], 0, ""),
        _row("worker peak resident memory, MiB", s["worker_peak_rss_mib"], 0, ""),
        _row("worker resident memory when ready, MiB", s["worker_ready_rss_mib"], 0, ""),
        _row("events per Kafka message (SDK envelopes)", s["events_per_message"], 1, ""),
        _row("ClickHouse rows inserted per event", s["rows_per_event"], 2, ""),
    ]  # fmt: skip


def latency_table(lat: dict[str, Any]) -> list[str]:
    s = lat["summary"]
    return [
        "| figure | median | min | max |",
        "|---|---:|---:|---:|",
        _row("offered rate, events/s", s["offered_events_per_s"]),
        _row("achieved send rate, events/s", s["sent_events_per_s"]),
        _row("events measured", s["measured"]),
        _row("events never visible (must be 0)", s["missing"]),
        _row("event time → visible, p50, s", s["p50_s"], 3),
        _row("event time → visible, p95, s", s["p95_s"], 3),
        _row("event time → visible, p99, s", s["p99_s"], 3),
        _row("event time → visible, max, s", s["max_s"], 3),
        _row("of which before the worker accepted it, p50, s (±0.5)", s["to_worker_p50_s"], 1),
        _row("of which before the worker accepted it, p99, s (±0.5)", s["to_worker_p99_s"], 1),
        _row("poll period (resolution), ms", s["poll_period_ms"]),
        _row("mean poll query, ms", s["mean_query_ms"], 1),
        _row("worker CPU used, % of one core", s["worker_cpu_percent"]),
        _row("worker CPU, µs per event (live traffic)", s["worker_cpu_us_per_event"]),
    ]  # fmt: skip


def scaling_table(sc: dict[str, Any]) -> list[str]:
    lines = [
        "| workers, standby replicas | events/s until all rows visible (min–max) "
        "| of one worker | CPU of all workers, µs per event (min–max) |",
        "|---|---:|---:|---:|",
    ]
    for name, c in sc["configurations"].items():
        s = c["summary"]
        rate, cpu = s["events_per_s"], s["cpu_us_per_event"]
        lines.append(
            f"| {name} | {_fmt(rate['median'])} ({_fmt(rate['min'])}–{_fmt(rate['max'])}) "
            f"| {s['ratio_to_one_worker']['median']:.2f} "
            f"| {_fmt(cpu['median'])} ({_fmt(cpu['min'])}–{_fmt(cpu['max'])}) |"
        )
    return lines


def standby_sentence(ratio: float) -> str:
    """What the scaling runs say of a standby replica's cost: a ratio of CPU per event."""
    said = f"With one standby replica, two workers used {ratio:.2f}× the CPU per event of two "
    if ratio > 1:
        return said + (
            "workers without: each also reads the other's table changelogs, about one record "
            'per event (docs/streaming.md, "Reading changelogs back").'
        )
    return said + (
        "workers without, so no cost of the standby showed in this run: the runs varied more "
        "than it (about a sixth in A/B runs of more rounds, docs/sizing.md)."
    )


def rates_table(ra: dict[str, Any]) -> list[str]:
    lines = [
        "| offered events/s | CPU per event, µs (min–max) | cores while traffic flows (min–max) |",
        "|---:|---:|---:|",
    ]
    for r in ra["rates"]:
        cpu, cores = r["summary"]["cpu_us_per_event"], r["summary"]["cores"]
        lines.append(
            f"| {_fmt(r['rate'])} | {_fmt(cpu['median'])} ({_fmt(cpu['min'])}–{_fmt(cpu['max'])}) "
            f"| {cores['median']:.2f} ({cores['min']:.2f}–{cores['max']:.2f}) |"
        )
    return lines


def state_table(st: dict[str, Any]) -> list[str]:
    workers, p = st["workers"], st["pure"]
    lines = ["| figure | MiB per 100k users | what it is |", "|---|---:|---|"]
    for w in workers:
        cache_keys = w.get("cache_keys")
        if cache_keys is not None:
            inside = (
                f"the parsed-state cache bounded to {cache_keys:,} keys per processor "
                "(SIYU_STATE_CACHE_KEYS): what stays is RocksDB's memtables and block cache"
            )
        elif w["store"] == "memory":
            inside = "the parsed-state cache and the store's bytes"
        else:
            inside = (
                "the parsed-state cache, plus RocksDB memtables, which grow in blocks up to "
                "their configured size rather than per user: noisy at this size, read the "
                "memory store's line for the cost per user"
            )
        bound = "" if cache_keys is None else f", state cache ≤ {cache_keys:,} keys"
        lines.append(
            f"| worker resident memory, {w['store']} store{bound} | "
            f"{_fmt(w['rss_growth_mib_per_100k'], 1)} | RSS growth while the events of "
            f"{w['users_second_phase']:,} new users went through, after a first phase "
            f"({inside}) |"
        )
    for w in workers:
        if w["store"] == "rocksdb" and w.get("cache_keys") is None:
            lines.append(
                f"| RocksDB files (SST + WAL) | {_fmt(w['rocksdb_mib_per_100k'], 1)} | "
                "the worker's data directory after it stopped (compressed SSTs, write-ahead "
                "log) |"
            )
    w = workers[0]
    keys = ", ".join(f"{k} {v:,}" for k, v in sorted(w["keys"].items()))
    lines += [
        f"| changelogs, live records | {_fmt(w['changelog_live_mib_per_100k'], 1)} | "
        "key + value bytes of the latest record per key: what a memory store holds as bytes "
        f"and a compacted changelog converges to ({w['store']} run; live keys: {keys}) |",
        f"| changelogs, as written | {_fmt(w['changelog_log_mib_per_100k'], 1)} | "
        "broker log size right after the run (every version, before compaction) |",
        f"| pure domain core: serialised state | {_fmt(p['state_mib_per_100k'], 1)} | "
        "tests/bench/state_size.py: keys + orjson states of the Engine, no Kafka, no Faust |",
        f"| pure domain core: resident memory | {_fmt(p['rss_mib_per_100k'], 1)} | "
        "tests/bench/state_size.py: RSS gained building those states (the parsed-state cache) |",
    ]
    return lines


def verdict(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, passed) for each target of issue 8 that was measured."""
    out = []
    t = results.get("throughput")
    if t:
        ratio = t["summary"]["ratio_to_ceiling"]["median"]
        out.append(
            (
                f"one worker sustains ≥ {MIN_RATIO_TO_CEILING:.0%} of the ceiling",
                f"{ratio:.1%} (median of {len(t['runs'])})",
                ratio >= MIN_RATIO_TO_CEILING,
            )
        )
    lat = results.get("latency")
    if lat:
        worst = max(r["p99_s"] for r in lat["runs"])
        missing = sum(r["missing"] for r in lat["runs"])
        measured = f"{worst:.2f} s (worst run)" + (f", {missing} never visible" if missing else "")
        out.append(
            (
                f"p99 event → visible < {MAX_P99_SECONDS:.0f} s at half the max rate",
                measured,
                missing == 0 and worst < MAX_P99_SECONDS,
            )
        )
    return out


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [f"# siyu benchmark, {meta['when']}", "", meta["setup"], ""]
    if "throughput" in results:
        lines += [
            f"## Throughput, one worker ({meta['events']:,} events, {meta['users']:,} users, "
            f"{len(results['throughput']['runs'])} runs)",
            "",
            *throughput_table(results["throughput"]),
            "",
        ]
    if "latency" in results:
        lat = results["latency"]
        lines += [
            f"## Latency at a fixed offered rate ({len(lat['runs'])} run(s))",
            "",
            lat["note"],
            "",
            *latency_table(lat),
            "",
        ]
    if "scaling" in results:
        sc = results["scaling"]
        runs = len(next(iter(sc["configurations"].values()))["runs"])
        lines += [
            f"## Scaling out ({sc['events']:,} events, {sc['users']:,} users, {runs} rounds)",
            "",
            "Workers started and settled first, then the backlog sent; all workers share this "
            "machine's cores with Kafka and ClickHouse, so read the CPU per event, which is "
            "what a deployment pays on any number of machines (tests/bench/scaling.py).",
            "",
            *scaling_table(sc),
            "",
        ]
        if sc.get("standby_cpu_ratio") is not None:
            lines += [standby_sentence(sc["standby_cpu_ratio"]), ""]
    if "rates" in results:
        ra = results["rates"]
        lines += [
            f"## Live CPU by offered rate, one worker ({ra['seconds']:g} s of traffic per run, "
            f"{ra['rounds']} round(s))",
            "",
            *rates_table(ra),
            "",
            f"A line through all runs: **{ra['fixed_cores']:.2f} of a core with any traffic, "
            f"plus {ra['us_per_event']:.0f} µs per event**. Batches close on window timers, so "
            "the machinery they pay runs about as often at any rate (tests/bench/rates.py).",
            "",
        ]
    if "state" in results:
        st = results["state"]
        lines += [
            f"## State size per 100,000 users ({st['workers'][0]['users']:,} users, "
            f"{st['workers'][0]['events']:,} events through one worker; pure core: "
            f"{st['pure']['users']:,} users)",
            "",
            *state_table(st),
            "",
        ]
    if "domain" in results:
        d = results["domain"]
        lines += [
            "## Domain core alone (tests/bench/domain_bench.py)",
            "",
            f"{d['events']:,} events, median of {d['runs']} runs: "
            f"{d['events_per_cpu_s']:,.0f} events per CPU second "
            f"({d['cpu_us_per_event']:.1f} µs per event).",
            "",
        ]
        own = d.get("throughput_events")
        if own:
            lines += [
                f"On the throughput runs' own {own['events']:,} events: "
                f"{own['events_per_cpu_s']:,.0f} events per CPU second "
                f"({own['cpu_us_per_event']:.1f} µs per event).",
                "",
            ]
    checks = verdict(results)
    if checks:
        lines += ["## Targets of issue 8", "", "| target | measured | result |", "|---|---|---|"]
        lines += [f"| {t} | {m} | {'PASS' if ok else 'FAIL'} |" for t, m, ok in checks]
        lines += ["", verdict_line(checks)]
        bound = domain_bound(results)
        if bound is not None:
            lines += ["", bound_sentence(bound)]
    return "\n".join(lines) + "\n"


def domain_bound(results: dict[str, Any]) -> float | None:
    """The largest share of the ceiling that any one worker running this domain core can
    reach on the throughput runs' events, whatever everything else costs: the domain core's
    events per CPU second on those events over the ceiling's events per second. A worker
    steps every event on its one event loop, one core at most, so its rate is at most the
    domain core's. None when the two were not both measured."""
    t = results.get("throughput")
    own = (results.get("domain") or {}).get("throughput_events")
    if not t or not own:
        return None
    return float(own["events_per_cpu_s"] / t["summary"]["ceiling_events_per_s"]["median"])


def bound_sentence(bound: float) -> str:
    """What :func:`domain_bound` says of issue 8's throughput target."""
    said = (
        f"The domain core alone steps the throughput runs' events at {bound:.1%} of the "
        "ceiling's rate (events per CPU second of its steps, no parsing, no Kafka, no "
        "ClickHouse). A worker runs those steps on its one event loop, so "
    )
    if bound < MIN_RATIO_TO_CEILING:
        return said + (
            f"**no worker running this domain core can reach {MIN_RATIO_TO_CEILING:.0%} of the "
            f"ceiling: at most {bound:.1%}**, even if everything else it does cost nothing."
        )
    return said + (
        f"the domain core leaves room for the {MIN_RATIO_TO_CEILING:.0%} target: it rules "
        f"out only ratios above {bound:.1%}."
    )


def verdict_line(checks: list[tuple[str, str, bool]]) -> str:
    failed = [f"{t}: {m}" for t, m, ok in checks if not ok]
    return "RESULT: PASS" if not failed else "RESULT: FAIL (" + "; ".join(failed) + ")"


def write(kind: str, results: dict[str, Any], table: str) -> str:
    """Write ``results`` as JSON and ``table`` as Markdown under results/; returns table."""
    RESULTS.mkdir(exist_ok=True)
    when = results["meta"]["when"]
    base = RESULTS / f"{kind}-{when}"
    base.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    base.with_suffix(".md").write_text(table)
    return table + f"\n(written: {base}.json, {base}.md)\n"


def meta(**figures: Any) -> dict[str, Any]:
    """The run's setup: when, the machine, the commit, plus ``figures``."""
    import os
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "pipeline"))
    load = os.getloadavg()
    setup = (
        f"Commit {commit}{' with uncommitted changes in pipeline/' if dirty else ''}; "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at the start (the machine may "
        "be shared: read ratios, not absolute figures)."
    )
    return {"when": stamp(), "commit": commit, "pipeline_dirty": dirty, "setup": setup, **figures}
