"""``siyu demo`` (``make demo``): a generated brand through the real pipeline, and its answers.

What it does, in order:

1. generates weeks of a believable brand (:mod:`pipeline.demo.brand`: KOL campaigns,
   WeChat share cascades, KOCs, repeat buyers; seeded, so a run can be repeated);
2. starts a worker and a collector as child processes (``siyu worker``, ``siyu collector``)
   on free loopback ports, the collector configured with the hash of an API key made for
   the demo brand (the key itself only ever lives in this process);
3. sends what the brand's apps send (:attr:`~pipeline.demo.brand.DemoBrand.arrival`, with
   its duplicates and late phones) through the collector with the SDK's HTTP emitter, then
   posts the malformed inputs one request each;
4. waits until the pipeline is quiet (:mod:`pipeline.kafka.quiescence`), reads the answers from
   ClickHouse's views with the cookbook's queries (:mod:`pipeline.demo.readback`) and
   prints them;
5. recomputes the same answers from the generated events with the pure domain core
   (:mod:`pipeline.demo.answers`) and prints, answer by answer, whether ClickHouse agrees.
   Any disagreement makes the exit code 1.

**Pacing.** The events are sent in event-time order, in steps of at most half a day of
event time, and after each step the demo waits until the agents have committed everything.
The topology's watermark assumes that what is in flight between the state agents is less
than the allowed lateness (one day) behind the newest event; a month of events dumped at
once breaks that assumption and mis-attributes purchases (docs/streaming.md, "Watermarks").
Live traffic is paced by the clock; a demo that replays a month in minutes paces itself.

**Malformed inputs.** The collector validates each event of a request on its own: an event
that breaks the contract is answered ``rejected`` with its reason and written to the
dead-letter topic with its original bytes, and so lands in ClickHouse's ``dead_letters``. A
body that is not JSON at all, or not an event or an envelope (a bare list), is refused as
a whole request with 400 (``malformed_json``, ``malformed_body``): nothing of it reaches
Kafka, and the sender, told so synchronously, still holds the bytes. The demo therefore
expects in ``dead_letters`` exactly the inputs rejected per event, checks that the others
got their 400 with the right error code, and prints both.

**A fresh namespace per run** (:func:`demo_command`): each run gets Kafka topics and
consumer groups of its own (``<app id>-demo-<run>``, deleted at the end) and recreates the
ClickHouse database ``<database>_demo``, which is left behind to explore with the
cookbook. Resending the same seed into one namespace would not do: the watermark is shared
by every brand of a namespace, so events older than what it already saw are late; ingest
remembers event ids only for the dedup horizon (window + lateness, about 8 days of event
time), so a month sent twice counts its first weeks twice; and credits that a run gives
and retracts depend on the interleaving, so two runs' signed rows would add up.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click

from pipeline.collector.keys import hash_key, new_key
from pipeline.contract.events import RejectReason
from pipeline.demo.answers import LOCAL_TZ, DemoAnswers, compute_answers, format_answers
from pipeline.demo.brand import BrandParams, DemoBrand, Event, MalformedInput, generate
from pipeline.demo.children import Child, Children, free_port
from pipeline.demo.readback import Comparison, compare_answers, format_comparison, read_answers
from pipeline.errors import ConfigError, ServiceUnavailable
from pipeline.kafka.quiescence import Look, Quiescence
from pipeline.settings import Settings
from pipeline.sink.clickhouse import (
    CONNECTION_ERRORS,
    check_identifier,
    client_from_url,
    server_version,
    unavailable,
)

Echo = Callable[[str], None]

#: Most event time one sending step covers (see "Pacing" above).
STEP_S = 12 * 3600
#: Events per request to the collector.
BATCH_SIZE = 500

#: Malformed inputs the collector refuses as a whole request, with its status and error
#: code; every other malformed input is rejected per event and dead-lettered.
REFUSED_WHOLE: dict[RejectReason, tuple[int, str]] = {
    RejectReason.INVALID_JSON: (400, "malformed_json"),
    RejectReason.NOT_AN_OBJECT: (400, "malformed_body"),
}


@dataclass
class DemoOutcome:
    """What a run found: the answers on both sides and every disagreement."""

    answers: DemoAnswers
    expected: DemoAnswers
    comparisons: list[Comparison]
    #: Collector answers that differ from what the demo expected (events not accepted,
    #: malformed inputs answered otherwise).
    collector_problems: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)

    @property
    def agrees(self) -> bool:
        return not self.collector_problems and all(c.agrees for c in self.comparisons)


# -- the run -----------------------------------------------------------------------------------


def run_demo(
    settings: Settings,
    params: BrandParams,
    *,
    echo: Echo,
    log_dir: Path,
    progress_bar: bool = False,
    timeout_s: float = 300.0,
) -> DemoOutcome:
    """Run the demo brand through a worker and a collector of ``settings``' namespace.

    The namespace (topics, groups, database) must be migrated and otherwise unused;
    :func:`demo_command` makes one. ``timeout_s`` bounds each wait for the pipeline.
    """
    from pipeline.kafka.topics import ensure_topics, topic_specs
    from pipeline.worker.topology import domain_config

    brand = generate(params)
    _describe(brand, echo)
    db = check_identifier(settings.clickhouse_database)
    _check_database(settings)
    ensure_topics(settings.kafka_bootstrap, topic_specs(settings))

    key = new_key()
    s = settings.model_copy(
        update={
            "collector_keys": {hash_key(key): params.brand_id},
            "collector_keys_file": None,
            "collector_host": "127.0.0.1",
            "collector_port": free_port(),
            "worker_web_host": "127.0.0.1",
            "worker_web_port": free_port(),
        }
    )
    shutil.rmtree(s.data_dir, ignore_errors=True)
    try:
        refused, problems = _through_the_pipeline(
            s,
            brand,
            key,
            echo=echo,
            log_dir=log_dir,
            progress_bar=progress_bar,
            timeout_s=timeout_s,
        )
    finally:
        shutil.rmtree(s.data_dir, ignore_errors=True)

    client = client_from_url(s.clickhouse_url)
    try:
        got = read_answers(client, db, params.brand_id)
    except CONNECTION_ERRORS as err:
        raise unavailable(s.clickhouse_url, err) from None
    finally:
        client.disconnect()
    echo("")
    echo(f"Answers read from ClickHouse (database {db}, the views of docs/queries.md):")
    echo("")
    echo(format_answers(got))
    echo(_format_refused(refused))

    echo("recomputing the answers from the generated events (pure domain core) ...")
    dead_lettered = [m.payload for m in brand.malformed if m.reason not in REFUSED_WHOLE]
    expected = compute_answers(brand.arrival, dead_lettered, config=domain_config(s))
    outcome = DemoOutcome(got, expected, compare_answers(got, expected), problems, refused)
    echo(_format_collector_check(problems))
    echo(format_comparison(outcome.comparisons))
    return outcome


def _through_the_pipeline(
    s: Settings,
    brand: DemoBrand,
    key: str,
    *,
    echo: Echo,
    log_dir: Path,
    progress_bar: bool,
    timeout_s: float,
) -> tuple[Counter[str], list[str]]:
    """Start a worker and a collector, send everything, wait until it is all in ClickHouse,
    stop them. Returns the refused requests by error code and the collector's surprises."""
    collector_url = f"http://127.0.0.1:{s.collector_port}"
    problems: list[str] = []
    with Children() as children, Quiescence(s) as quiet:
        worker = children.start(
            "worker",
            ["worker"],
            s,
            f"http://127.0.0.1:{s.worker_web_port}/readyz",
            log_dir / "worker.log",
        )
        collector = children.start(
            "collector", ["collector"], s, f"{collector_url}/readyz", log_dir / "collector.log"
        )
        echo("starting a worker and a collector ...")
        worker.wait_ready(timeout_s)
        _ready(worker, f"web port {s.worker_web_port}", echo)
        collector.wait_ready(timeout_s)
        _ready(collector, f"{collector_url}/v1/events, key for {brand.params.brand_id}", echo)

        def wait(include_sink: bool, on_look: Callable[[Look], None] | None) -> None:
            quiet.wait(
                timeout_s,
                include_sink=include_sink,
                check=children.check_alive,
                on_look=on_look,
            )

        problems += _send_events(brand, key, collector_url, wait, echo, progress_bar)
        refused, more = _post_malformed(brand.malformed, key, collector_url, echo)
        problems += more
        echo("waiting until every row is in ClickHouse ...")
        wait(True, None)
        echo("the pipeline is quiet: every group committed the end of its topics")
    return refused, problems


def _describe(brand: DemoBrand, echo: Echo) -> None:
    p = brand.params
    dups = len(brand.arrival) - len(brand.events)
    echo(
        f"generated {p.brand_id} (seed {p.seed}): {p.users:,} users, {p.kols} KOLs, "
        f"{p.days} days from {p.start:%Y-%m-%d}: {len(brand.events):,} events, sent as "
        f"{len(brand.arrival):,} ({dups:,} duplicates, up to {p.max_delay_s // 60} min late), "
        f"and {len(brand.malformed)} malformed inputs"
    )


def _ready(child: Child, what: str, echo: Echo) -> None:
    echo(f"  {child.name} ready (pid {child.pid}, {what}; log {child.log_path})")


def _check_database(s: Settings) -> None:
    """The database exists and has the views (a one-line error otherwise)."""
    db = check_identifier(s.clickhouse_database)
    client = client_from_url(s.clickhouse_url, database="default")
    try:
        found = client.execute(
            "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(view)s",
            {"db": db, "view": "credits_current"},
        )[0][0]
    except CONNECTION_ERRORS as err:
        raise unavailable(s.clickhouse_url, err) from None
    finally:
        client.disconnect()
    if not found:
        raise ConfigError(f"ClickHouse database {db} has no siyu schema; run `siyu migrate`")


# -- sending -----------------------------------------------------------------------------------


def paced_steps(events: Sequence[Event], step_s: int = STEP_S) -> list[list[Event]]:
    """``events`` (in sending order) cut into steps, each starting a new one when an event
    occurred ``step_s`` or more after the step's first event."""
    steps: list[list[Event]] = []
    start: dt.datetime | None = None
    for event in events:
        if start is None or (event.occurred_at - start).total_seconds() >= step_s:
            steps.append([])
            start = event.occurred_at
        steps[-1].append(event)
    return steps


def _send_events(
    brand: DemoBrand,
    key: str,
    collector_url: str,
    wait: Callable[[bool, Callable[[Look], None] | None], None],
    echo: Echo,
    progress_bar: bool,
) -> list[str]:
    """Send the arrival order through the collector, paced; return what went wrong."""
    from pipeline.sdk.http_emitter import HttpEmitter

    steps = paced_steps(brand.arrival)
    total = len(brand.arrival)
    echo(
        f"sending {total:,} events through the collector in {len(steps)} steps of at most "
        f"{STEP_S // 3600} h of event time, waiting for the agents after each"
    )
    accepted = 0
    rejected: list[str] = []
    # Enough attempts to ride out a broker restart (the collector answers 503 meanwhile).
    emitter = HttpEmitter(key, url=collector_url, batch_size=BATCH_SIZE, max_attempts=30)
    try:
        with _progress(total, echo, progress_bar) as show:
            for step in steps:
                for event in step:
                    emitter.track(event)
                result = emitter.flush()
                accepted += result.delivered
                rejected += [f"{r.event_id}: {r.reason}: {r.detail}" for r in result.rejected]
                until = f"{max(e.occurred_at for e in step).astimezone(LOCAL_TZ):%m-%d %H:%M}"
                show(len(step), f"through {until}")

                def behind(look: Look, until: str = until) -> None:
                    n = sum(look.behind.values())
                    show(0, f"through {until}, agents {n:,} messages behind")

                wait(False, behind)
    finally:
        emitter.discard()  # after an error: nothing more to send
        emitter.close()
    echo(f"the collector accepted {accepted:,} of {total:,} events")
    problems = []
    if accepted != total:
        problems.append(f"the collector accepted {accepted:,} of {total:,} events")
    problems += [f"the collector rejected a generated event: {r}" for r in rejected[:5]]
    return problems


ShowProgress = Callable[[int, str], None]


@contextmanager
def _progress(total: int, echo: Echo, bar: bool) -> Iterator[ShowProgress]:
    """``show(n_more, status)``: a progress bar on a terminal, else a line every ~10%."""
    if bar:
        with click.progressbar(
            length=total, label="sending", item_show_func=lambda what: what, show_pos=True
        ) as progress:

            def show_bar(n: int, what: str) -> None:
                progress.update(n, what)

            yield show_bar
        return
    done = [0, 0]  # events sent, last tenth reported

    def show_lines(n: int, what: str) -> None:
        if not n:
            return
        done[0] += n
        tenth = done[0] * 10 // total
        if tenth > done[1] or done[0] == total:
            done[1] = tenth
            echo(f"  sent {done[0]:,} of {total:,} events ({what})")

    yield show_lines


def _post_malformed(
    inputs: Sequence[MalformedInput], key: str, collector_url: str, echo: Echo
) -> tuple[Counter[str], list[str]]:
    """Post each malformed input as its own request; the refusals by error code, and the
    answers that differ from what the collector should say."""
    refused: Counter[str] = Counter()
    problems: list[str] = []
    for m in inputs:
        status, body = _post_raw(f"{collector_url}/v1/events", key, m.payload)
        want = REFUSED_WHOLE.get(m.reason)
        if want is not None:
            error = body.get("error") if isinstance(body, dict) else None
            refused[str(error)] += 1
            if (status, error) != want:
                problems.append(f"{m.what}: expected {want[0]} {want[1]}, got {status} {error}")
            continue
        results = body.get("results") if isinstance(body, dict) else None
        reasons = [r.get("reason") for r in results or [] if r.get("status") == "rejected"]
        if status != 200 or reasons != [m.reason.value]:
            problems.append(f"{m.what}: expected 200 rejected {m.reason}, got {status} {reasons}")
    n_dead = len(inputs) - sum(refused.values())
    echo(
        f"posted {len(inputs)} malformed inputs: {n_dead} rejected per event (dead-lettered), "
        f"{sum(refused.values())} refused as whole requests"
    )
    return refused, problems


def _post_raw(url: str, key: str, payload: bytes, attempts: int = 5) -> tuple[int, Any]:
    """POST ``payload`` as it is; retries 429/503 as the collector asks."""
    request = urllib.request.Request(
        url,
        data=payload,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return int(resp.status), json.loads(resp.read())
        except urllib.error.HTTPError as err:
            status, raw, retry = err.code, err.read(), err.headers.get("Retry-After")
        except OSError as err:
            raise ServiceUnavailable(
                f"the demo's collector at {url} did not answer ({err})"
            ) from None
        if status not in (429, 503) or attempt == attempts:
            try:
                return status, json.loads(raw)
            except ValueError:
                return status, None
        time.sleep(float(retry or 1))
    raise AssertionError("unreachable")


def _format_refused(refused: Counter[str]) -> str:
    lines = [
        "Refused by the collector as whole requests (400; not dead-lettered: the sender is",
        "told at once and keeps the bytes)",
    ]
    if not refused:
        return "\n".join([*lines, "  (none)"]) + "\n"
    width = max(len(e) for e in refused)
    lines += [f"  {e.ljust(width)}  {n:>8,}" for e, n in sorted(refused.items())]
    return "\n".join(lines) + "\n"


def _format_collector_check(problems: list[str]) -> str:
    if not problems:
        return (
            "collector answers: agree (every event accepted, every malformed input "
            "answered as expected)"
        )
    head = f"collector answers: DISAGREE: {len(problems)} unexpected answer(s)"
    return "\n".join([head, *(f"    {p}" for p in problems[:10])])


# -- the command -------------------------------------------------------------------------------


def demo_database(base: Settings) -> Settings:
    """``base`` with the demo's database, ``<database>_demo``, on the same server."""
    if base.clickhouse_cluster:
        raise ConfigError(
            "siyu demo runs on one ClickHouse server; unset SIYU_CLICKHOUSE_CLUSTER for it"
        )
    db = check_identifier(f"{base.clickhouse_database}_demo")
    url = urlunsplit(urlsplit(base.clickhouse_url)._replace(path=f"/{db}"))
    return base.model_copy(update={"clickhouse_url": url})


def demo_settings(base: Settings, run_id: str) -> Settings:
    """``base`` with a namespace of its own: topics and groups for ``run_id``, the demo's
    database (:func:`demo_database`), worker state in a directory of its own."""
    app = f"{base.app_id}-demo-{run_id}"
    return demo_database(base).model_copy(
        update={
            "app_id": app,
            "topic_events": f"{app}.events",
            "topic_dead_letters": f"{app}.dead-letters",
            "topic_rows": f"{app}.rows",
            "topic_by_user": f"{app}.by-user",
            "topic_by_share": f"{app}.by-share",
            "topic_by_sharer": f"{app}.by-sharer",
            "data_dir": f"{base.data_dir.rstrip('/')}-demo-{run_id}",
        }
    )


def recreate_database(s: Settings, echo: Echo) -> None:
    """Drop the demo database and migrate it afresh (only the demo writes it)."""
    from pipeline.sink.migrations import migrate

    db = check_identifier(s.clickhouse_database)
    client = client_from_url(s.clickhouse_url, database="default")
    try:
        client.execute(f"DROP DATABASE IF EXISTS {db}")
        migrate(client, db, server_version(client), log=lambda _: None)
    except CONNECTION_ERRORS as err:
        raise unavailable(s.clickhouse_url, err) from None
    finally:
        client.disconnect()
    echo(f"ClickHouse database {db}: recreated and migrated")


def delete_kafka_namespace(s: Settings) -> list[str]:
    """Delete the run's topics (its own and Faust's, all named after the app id) and its
    consumer groups. Returns the topics deleted."""
    from pipeline.kafka.topics import admin_client

    admin = admin_client(s.kafka_bootstrap)
    try:
        mine = sorted(
            t for t in admin.list_topics() if t.startswith((f"{s.app_id}.", f"{s.app_id}-"))
        )
        if mine:
            admin.delete_topics(mine, raise_errors=False)
        admin.delete_groups([s.app_id, f"{s.app_id}-sink"])
    finally:
        admin.close()
    return mine


def demo_command(
    base: Settings, params: BrandParams, *, echo: Echo, log_dir: Path = Path(".local/demo")
) -> DemoOutcome:
    """``siyu demo``: a fresh namespace, the run, the namespace's Kafka part removed after.

    The children's logs go to ``log_dir`` (the last run's are kept there)."""
    from pipeline.kafka.topics import admin_client

    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    s = demo_settings(base, run_id)
    _check_kafka_listens(s)
    admin_client(s.kafka_bootstrap).close()
    recreate_database(s, echo)
    echo(f"Kafka namespace {s.app_id} (topics {s.app_id}.*), deleted at the end")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        outcome = run_demo(s, params, echo=echo, log_dir=log_dir, progress_bar=sys.stdout.isatty())
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            delete_kafka_namespace(s)
        except ServiceUnavailable as err:
            echo(
                f"could not delete the demo's Kafka topics and groups ({err}); delete those "
                f"named {s.app_id}.* and {s.app_id}-* when Kafka is back"
            )
    db = s.clickhouse_database
    echo(
        f"Explore: clickhouse-client --port {_port(s)} -d {db}, with the queries of "
        "docs/queries.md; `siyu summary` prints these answers again."
    )
    return outcome


def _check_kafka_listens(s: Settings) -> None:
    """Fail at once, in one line, when no bootstrap server accepts a connection (the admin
    client would retry for half a minute first)."""
    for server in s.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
            return
        except OSError:
            continue
    raise ServiceUnavailable(
        f"Kafka at {s.kafka_bootstrap} is not reachable (nothing listens); start the local "
        "stack with `make up`, or set SIYU_KAFKA_BOOTSTRAP"
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the demo like Ctrl-C does: children stopped, namespace deleted."""
    raise KeyboardInterrupt


def _port(s: Settings) -> int:
    return urlsplit(s.clickhouse_url).port or 9000


def print_answers(s: Settings, brand_id: str, *, echo: Echo) -> None:
    """The demo's answers for ``brand_id`` as ClickHouse holds them now (``siyu summary``)."""
    _check_database(s)
    client = client_from_url(s.clickhouse_url)
    try:
        answers = read_answers(client, s.clickhouse_database, brand_id)
    except CONNECTION_ERRORS as err:
        raise unavailable(s.clickhouse_url, err) from None
    finally:
        client.disconnect()
    echo(format_answers(answers))
