"""The streaming topology on the real Kafka and ClickHouse equals the batch oracle:
with out-of-order arrival and duplicates, after SIGKILLs of the worker, and with two
workers sharing the partitions."""

from __future__ import annotations

import random
import re
import signal
import time
from pathlib import Path

import orjson
from kafka import KafkaProducer

from pipeline.contract.events import encode_envelope, encode_event
from pipeline.kafka.quiescence import Quiescence
from pipeline.worker.watchdog import ExitCode
from tests.integration.pipeline_env import (
    PipelineEnv,
    Worker,
    by,
    running_worker,
    scrape,
    stop_together,
    wait_for,
)
from tests.integration.readback import engine_of, read_domain_rows
from tests.oracle import OracleResult, recompute
from tests.scenario import Event, Scenario
from tests.unit.domain.compare import engine_result


def send(penv: PipelineEnv, events: list[Event], per_message: int = 40) -> None:
    s = penv.settings()
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=5)
    for i in range(0, len(events), per_message):
        chunk = events[i : i + per_message]
        # Mostly envelopes; every fifth chunk goes as single-event messages: both must work.
        if (i // per_message) % 5 != 4:
            producer.send(s.topic_events, encode_envelope(chunk))
        else:
            for event in chunk:
                producer.send(s.topic_events, encode_event(event))
    producer.flush()
    producer.close()


def in_steps(events: list[Event], per_step: int = 150) -> list[list[Event]]:
    """``events`` cut, in order, into steps of about half a day of event time."""
    return [events[i : i + per_step] for i in range(0, len(events), per_step)]


def send_paced(
    penv: PipelineEnv, events: list[Event], per_step: int = 150, include_sink: bool = True
) -> None:
    """Send like live traffic: about half a day of event time at a time, each step waiting
    until the pipeline is quiet (a backlog sent at once has its own test)."""
    for step in in_steps(events, per_step):
        send(penv, step)
        wait_for(
            lambda: quiescent(penv, include_sink), 120, "the pipeline to go quiet", interval=0.3
        )


def quiescent(penv: PipelineEnv, include_sink: bool = True) -> bool:
    """Every group has committed the end of every topic it reads, twice in a row with no new
    messages in between: nothing is in flight anywhere (pipeline/kafka/quiescence.py)."""
    with Quiescence(penv.settings()) as q:
        return q.quiet(include_sink)


def assert_equals_oracle(penv: PipelineEnv, expected: OracleResult) -> None:
    got = engine_result(engine_of(read_domain_rows(penv.settings().clickhouse_url)))
    assert got.chains == expected.chains
    assert got.credits == expected.credits
    assert got.promotions == expected.promotions
    assert got.sharers == expected.sharers
    assert got.loyalty == expected.loyalty


def test_topology_equals_the_batch_oracle(
    penv: PipelineEnv, scenario: Scenario, tmp_path: Path
) -> None:
    expected = recompute(scenario.arrival)
    assert expected.promotions and any(c["kind"] == "referral" for c in expected.credits.values())
    # A short stall timeout: a healthy worker with quiet spells must never trip it. Sweeps
    # of expired state in chunks of 7 keys: many chunks, each published and written. A
    # state cache of 5 keys per processor: most states are read back from the tables.
    log = tmp_path / "worker.log"
    env = {"SIYU_STALL_TIMEOUT_S": "8", "SIYU_SWEEP_CHUNK": "7", "SIYU_STATE_CACHE_KEYS": "5"}
    with running_worker(penv, log, **env) as worker:
        send_paced(penv, scenario.arrival)
        assert worker.proc.poll() is None, "the stall watchdog stopped a healthy worker"
        samples = scrape(worker.port)
    assert_equals_oracle(penv, expected)
    evictions = by(samples, "siyu_state_cache_evictions_total", "processor")
    misses = by(samples, "siyu_state_cache_lookups_total", "processor", "result")
    for processor in ("user", "share", "sharer"):
        assert evictions[(processor,)] > 0, evictions
        assert misses[(processor, "miss")] > 0, misses
    sweeps = re.findall(r"swept (\d+) keys of state-\w+\[\d+\] in (\d+) chunk", log.read_text())
    assert any(int(chunks) > 1 for _, chunks in sweeps), "no sweep ran in several chunks"


def test_a_backlog_of_two_weeks_sent_at_once_equals_the_batch_oracle(
    penv: PipelineEnv, scenario: Scenario, tmp_path: Path
) -> None:
    """Everything in Kafka before the worker starts, as after an outage: ingest reads days
    of event time ahead of the state agents' queues, and the watermark it announces must
    still never overtake what they have to say to each other (pipeline/worker/watermarks.py)."""
    expected = recompute(scenario.arrival)
    topics = penv.siyu("topics")
    assert topics.returncode == 0, topics.stderr
    send(penv, scenario.arrival, per_message=200)
    log = tmp_path / "worker.log"
    # Agents handle what they take in parts of at most this many bytes of input: with 1,
    # every message is a part of its own, published and written before the next.
    with running_worker(penv, log, SIYU_BATCH_MAX_BYTES="1") as worker:
        wait_for(lambda: quiescent(penv), 300, "the backlog to be processed", interval=0.5)
        assert_equals_oracle(penv, expected)
        samples = scrape(worker.port)
        ingest_parts = by(samples, "siyu_agent_batch_duration_seconds_count", "agent")
        messages = by(samples, "siyu_ingest_messages_total")[()]
        # Taken from a backlog, ingest's batches hold many messages each: unsplit, there
        # would be far fewer batches than messages.
        assert messages == ingest_parts[("ingest",)] > 0
        # Ingest announces the backlog's event-time progress only once its consequences
        # were processed, so it reaches the state agents after the first quiet moment. The
        # first sweep is the sign that it did: then expiry and finalisation run, and the
        # results must still equal the oracle once the pipeline is quiet again.
        wait_for(lambda: "swept" in log.read_text(), 120, "the watermark to reach the agents")
        wait_for(lambda: quiescent(penv), 300, "the pipeline to be quiet again", interval=0.5)
    assert_equals_oracle(penv, expected)


#: The stall watchdog's timeout in the crash tests (the default is two minutes).
_STALL_TIMEOUT = "20"


def settle(penv: PipelineEnv, worker: Worker, log_dir: Path) -> tuple[Worker, int]:
    """Wait until the pipeline is quiet, acting as the worker's supervisor: a worker that
    exits because its stall watchdog fired is started again. Returns the worker running at
    the end and the number of such restarts. The waiting is ``Quiescence.wait``'s, which
    also weathers a broker that is away or restarting."""
    workers = [worker]
    restarts = settle_workers(penv, workers, log_dir)
    return workers[0], restarts


def settle_workers(penv: PipelineEnv, workers: list[Worker], log_dir: Path) -> int:
    """:func:`settle` for several workers: each one that stalled is replaced in ``workers``
    by a worker started again with its settings. Returns the number of restarts."""
    restarts = 0

    def supervise() -> None:
        nonlocal restarts
        for i, worker in enumerate(workers):
            if worker.proc.poll() is None:
                continue
            log = worker.log_path.read_text()
            assert worker.proc.returncode == ExitCode.STALLED, f"worker died:\n{log[-3000:]}"
            assert any(
                why in log
                for why in (
                    "no progress on owned partitions",
                    "table recovery made no progress",
                    "did not deliver",
                )
            )
            restarts += 1
            # Not waited for: a restart can exit again before it is ready (a hole in its
            # first batch), and the next look restarts it again.
            workers[i] = worker.again(log_dir / f"restart{restarts}.log")

    with Quiescence(penv.settings()) as q:
        q.wait(300, interval_s=0.3, check=supervise)
    return restarts


def test_sigkill_at_random_points_loses_and_doubles_nothing(
    penv: PipelineEnv, small_scenario: Scenario, tmp_path: Path
) -> None:
    rng = random.Random(7)
    expected = recompute(small_scenario.arrival)
    steps = in_steps(small_scenario.arrival)
    kill_at = set(rng.sample(range(1, len(steps) - 1), 3))
    worker = Worker(penv, tmp_path / "worker0.log", SIYU_STALL_TIMEOUT_S=_STALL_TIMEOUT)
    worker.wait_ready()
    kills = 0
    for n, step in enumerate(steps):
        send(penv, step)
        if n in kill_at:
            # Somewhere in the middle of processing that step: batches half done, offsets not
            # committed, changelog records written or not, rows inserted or not.
            time.sleep(rng.uniform(0.05, 1.5))
            assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
            kills += 1
            worker = Worker(
                penv, tmp_path / f"worker{kills}.log", SIYU_STALL_TIMEOUT_S=_STALL_TIMEOUT
            )
            worker.wait_ready()
        # A worker restarted after a SIGKILL rarely stalls inside Faust (docs/streaming.md);
        # its watchdog makes it exit and this supervisor starts it again.
        worker, _ = settle(penv, worker, tmp_path / f"step{n}")
    worker.stop()
    assert kills == 3
    assert_equals_oracle(penv, expected)


def test_two_workers_give_the_same_result_as_one(
    penv: PipelineEnv, small_scenario: Scenario, tmp_path: Path
) -> None:
    expected = recompute(small_scenario.arrival)
    with running_worker(penv, tmp_path / "w1.log"), running_worker(penv, tmp_path / "w2.log"):
        send_paced(penv, small_scenario.arrival)
    assert_equals_oracle(penv, expected)


def test_a_message_whose_step_fails_is_dead_lettered_and_its_neighbours_go_on(
    penv: PipelineEnv, tmp_path: Path
) -> None:
    from kafka import KafkaConsumer as Consumer

    from pipeline.contract.deadletter import H_INDEX, H_REASON
    from pipeline.contract.events import ClickEvent
    from pipeline.contract.partitioning import partition_for
    from pipeline.domain import Addressed, ProcessorName
    from tests.scenario import START

    s = penv.settings()
    n = s.topic_partitions
    users = [f"u{i}" for i in range(200) if partition_for("acme", f"u{i}", n) == 0][:2]

    def click(user: str) -> dict[str, object]:
        ev = ClickEvent(
            type="click",
            event_id=f"c-{user}",
            schema_version=1,
            brand_id="acme",
            user_id=user,
            occurred_at=START,
            channel="app",
            kol_id="kol-1",
        )
        return Addressed(ProcessorName.USER, "acme", user, ev).to_dict()

    bad = {
        "processor": "user",
        "brand_id": "acme",
        "key": "u-bad",
        "message": {"type": "share_resolved", "not_a_field": 1},
    }
    envelope = orjson.dumps({"wm": {}, "m": [click(users[0]), bad, click(users[1])]})
    with running_worker(penv, tmp_path / "worker.log"):
        producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
        producer.send(s.topic_by_user, envelope, partition=0)
        producer.flush()
        producer.close()
        wait_for(lambda: quiescent(penv), 60, "the pipeline to go quiet", interval=0.3)
        consumer = Consumer(
            s.topic_dead_letters,
            bootstrap_servers=s.kafka_bootstrap,
            auto_offset_reset="earliest",
            consumer_timeout_ms=3000,
        )
        letters = list(consumer)
        consumer.close()
    [letter] = letters
    headers = dict(letter.headers)
    assert headers[H_REASON] == b"processing_error"
    assert headers[H_INDEX] == b"1"
    assert orjson.loads(letter.value) == bad
    loyalty = engine_of(read_domain_rows(s.clickhouse_url)).loyalty()
    assert {u for _, u in loyalty} == set(users)
    assert all(row.clicks == 1 for row in loyalty.values())


def test_rocksdb_tables_survive_a_restart_and_give_the_same_result(
    penv: PipelineEnv, small_scenario: Scenario, tmp_path: Path
) -> None:
    """Production stores state in RocksDB (rocksdict): same result, also across a restart
    that reopens the local store instead of rebuilding it from the changelog."""
    expected = recompute(small_scenario.arrival)
    half = len(small_scenario.arrival) // 2
    # Memtables of 5 MiB instead of siyu's 8 (and Faust's 64).
    env = {"SIYU_STORE": "rocksdb", "SIYU_ROCKSDB_WRITE_BUFFER_MB": "5"}
    with running_worker(penv, tmp_path / "w1.log", **env):
        send_paced(penv, small_scenario.arrival[:half])
    log = tmp_path / "w2.log"

    def user_sweeps() -> list[int]:
        return [int(n) for n in re.findall(r"swept (\d+) keys of state-user", log.read_text())]

    with running_worker(penv, log, **env):
        send_paced(penv, small_scenario.arrival[half:])
        # The restarted worker sweeps once the watermark reaches its state agents, which
        # may come after the pipeline first looks quiet (see the backlog test). Its sweeps
        # list a partition's keys from that partition's database alone: they find some.
        wait_for(lambda: any(user_sweeps()), 120, "a sweep that finds user keys", interval=0.5)
    assert_equals_oracle(penv, expected)
    # RocksDB records the options of each open in an OPTIONS file per database (Faust opens
    # a table partition's database when it is first used): each was opened with them.
    databases = list(Path(penv.settings().data_dir).rglob("*.db"))
    assert {db.name.rsplit("-", 1)[0] for db in databases} == {
        "state-user",
        "state-share",
        "state-sharer",
        "ingest-offsets",
    }
    for db in databases:
        newest = max(db.glob("OPTIONS-*"), key=lambda f: int(f.name.split("-")[1]))
        assert f"write_buffer_size={5 << 20}" in newest.read_text().split(), db


def test_a_share_clicked_by_40000_users_is_stored_and_equals_the_batch_oracle(
    penv: PipelineEnv, tmp_path: Path
) -> None:
    """A share keeps every user who clicked it within the window (to answer them if the
    share's chain changes): 40,000 of them make a 1.3 MB state, past Kafka's default record
    limit of 1 MiB. The broker refused that changelog record, and the worker retried the
    batch for ever, every partition stuck behind it."""
    import datetime as dt
    from decimal import Decimal

    from pipeline.contract.events import ClickEvent, PurchaseEvent, ShareEvent

    # Whole seconds, as ClickHouse's DateTime keeps them.
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).replace(microsecond=0)
    common = {"schema_version": 1, "brand_id": "acme", "channel": "wechat_group"}
    events: list[Event] = [
        ShareEvent(
            event_id="share", type="share", user_id="kol-fan", occurred_at=start,
            share_id="viral", kol_id="kol-1", **common,
        )
    ]  # fmt: skip
    clickers = 40_000
    for i in range(clickers):
        events.append(
            ClickEvent(
                event_id=f"click-{i}", type="click", user_id=f"u-{i:08x}", share_id="viral",
                occurred_at=start + dt.timedelta(seconds=1 + i), **common,
            )
        )  # fmt: skip
    events.append(
        PurchaseEvent(
            event_id="order-1", type="purchase", user_id="u-00000007", order_id="order-1",
            amount=Decimal("99.50"), currency="CNY", share_id="viral",
            occurred_at=start + dt.timedelta(seconds=clickers + 10), **common,
        )
    )  # fmt: skip
    expected = recompute(events)
    topics = penv.siyu("topics")
    assert topics.returncode == 0, topics.stderr
    send(penv, events, per_message=500)
    with running_worker(penv, tmp_path / "worker.log"):
        wait_for(lambda: quiescent(penv), 300, "the pipeline to go quiet", interval=0.5)
    assert_equals_oracle(penv, expected)
    assert expected.credits, "the purchase through the share was credited"


def _rocksdb_contents(db: Path) -> dict[bytes, bytes]:
    """A table partition's RocksDB database, read-only, without Faust's offset key."""
    from rocksdict import AccessType, Options, Rdict

    handle = Rdict(str(db), options=Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        return {k: v for k, v in handle.items() if k != b"__faust\0offset__"}
    finally:
        handle.close()


def test_standby_copies_equal_their_actives_and_a_survivor_carries_on_from_them(
    penv: PipelineEnv, small_scenario: Scenario, tmp_path: Path
) -> None:
    """Two RocksDB workers, each keeping a standby replica of the other's table partitions,
    which pipeline/worker/faust/recovery.py applies from the changelogs a take at a time. After
    the first half, every partition has a copy in both workers' data directories, and the two are
    equal. Then one worker is killed and the other carries on from its standby copies:
    the result equals the oracle."""
    expected = recompute(small_scenario.arrival)
    half = len(small_scenario.arrival) // 2
    data = Path(penv.settings().data_dir)

    def start(name: str, log: str) -> Worker:
        return Worker(
            penv,
            tmp_path / log,
            SIYU_STORE="rocksdb",
            SIYU_STANDBY_REPLICAS="1",
            SIYU_DATA_DIR=str(data / name),
        )

    w1, w2 = start("w1", "w1.log"), start("w2", "w2.log")
    try:
        w1.wait_ready()
        w2.wait_ready()
        send_paced(penv, small_scenario.arrival[:half])
        # Both at once: a worker left alone would take the other's partitions over and
        # move their watermarks on.
        stop_together([w1, w2])
    finally:
        w1.stop()
        w2.stop()
    copies = [{db.name: db for db in (data / name).rglob("*.db")} for name in ("w1", "w2")]
    n = penv.settings().topic_partitions
    tables = ("state-user", "state-share", "state-sharer", "ingest-offsets")
    assert set(copies[0]) == set(copies[1]) == {f"{t}-{p}.db" for t in tables for p in range(n)}
    users = 0
    for name, db in copies[0].items():
        contents = _rocksdb_contents(db)
        assert contents == _rocksdb_contents(copies[1][name]), name
        users += len(contents) if name.startswith("state-user") else 0
    assert users > 100, "the first half's users are in the tables"

    w1, w2 = start("w1", "w1-again.log"), start("w2", "w2-again.log")
    survivor = [w2]
    try:
        w1.wait_ready()
        w2.wait_ready()
        assert w1.stop(signal.SIGKILL) == -signal.SIGKILL
        # Taking w1's partitions over, the survivor may be given input past a hole that
        # faust-streaming's consumer leaves after a rebalance; it then exits for a restart
        # (the hole check), and the test restarts it as a supervisor would: from its own
        # data directory, so still from its standby copies.
        for step in in_steps(small_scenario.arrival[half:]):
            send(penv, step)
            settle_workers(penv, survivor, tmp_path)
    finally:
        w1.stop()
        survivor[0].stop()
    assert_equals_oracle(penv, expected)
    for log in tmp_path.glob("w*.log"):
        assert "changelog records failed" not in log.read_text(), log
