"""The SDK's Kafka emitter through a broker restart: every event arrives, and after the
pipeline runs each is in ClickHouse exactly once (dedup by event_id absorbs the copies that
retries, and a caller re-tracking the same orders, put on the topic)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.kafka.topics import topic_specs
from pipeline.sdk import KafkaEmitter
from pipeline.sdk.retry import Backoff
from pipeline.sink.clickhouse import client_from_url
from tests.integration import stack
from tests.integration.collector_env import event_ids, kafka_stopped, read_topic
from tests.integration.pipeline_env import PipelineEnv, running_worker, wait_for

N_EVENTS = 600
START = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


@pytest.fixture
def topics_dropped(penv: PipelineEnv) -> Iterator[PipelineEnv]:
    """penv, and its topics deleted afterwards (the shared broker restarts slower with
    every topic left behind)."""
    yield penv
    if stack.is_running("kafka"):
        names = [t.name for t in topic_specs(penv.settings())]
        stack.delete_topics(names, bootstrap=penv.kafka_bootstrap)


def _track(em: KafkaEmitter, i: int) -> str:
    user, when = f"u{i % 40}", START + dt.timedelta(seconds=7 * i)
    match i % 3:
        case 0:
            return em.track_click(user, "kol_post", kol_id=f"kol-{i % 4}", occurred_at=when)
        case 1:
            return em.track_share(user, "wechat_group", f"s-{i}", occurred_at=when)
        case _:
            return em.track_purchase(user, "app", f"o-{i}", "99.00", "CNY", occurred_at=when)


def _in_clickhouse(penv: PipelineEnv) -> Counter[str]:
    ch = client_from_url(penv.settings().clickhouse_url)
    try:
        rows = ch.execute("SELECT event_id, count() FROM events FINAL GROUP BY event_id")
    finally:
        ch.disconnect()
    return Counter({str(e): int(n) for e, n in rows})


def test_events_sent_through_a_broker_restart_land_exactly_once(
    topics_dropped: PipelineEnv, tmp_path: Path
) -> None:
    penv = topics_dropped
    s = penv.settings()
    assert penv.siyu("topics").returncode == 0
    emitter = KafkaEmitter(
        "acme",
        bootstrap_servers=s.kafka_bootstrap,
        topic=s.topic_events,
        batch_size=50,
        # Shorter than the outage, so the emitter's own resend path runs, not only
        # kafka-python's internal retries.
        delivery_timeout_s=6,
        max_attempts=30,
        backoff=Backoff(initial_s=0.5, maximum_s=4),
    )
    ids: list[str] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(N_EVENTS):
                ids.append(_track(emitter, i))
                time.sleep(0.02)
            emitter.flush()
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(ids) >= N_EVENTS // 5, 60, "the first events tracked")
        with kafka_stopped():
            time.sleep(1)  # events tracked while the broker is down
    finally:
        thread.join(timeout=300)
    assert not thread.is_alive(), "the emitter did not finish after the broker returned"
    assert errors == []
    assert emitter.pending == 0
    # A caller re-tracking orders (say after its own crash): same order ids, same event ids.
    for i in range(2, 200, 3):
        assert _track(emitter, i) in ids
    emitter.close()

    unique = set(ids)
    assert len(unique) == N_EVENTS
    on_topic = Counter(event_ids(read_topic(s.kafka_bootstrap, s.topic_events)))
    assert set(on_topic) == unique
    assert sum(on_topic.values()) > N_EVENTS  # the re-tracked orders at least

    with running_worker(penv, tmp_path / "worker.log"):
        landed = wait_for(
            lambda: (c := _in_clickhouse(penv)) and sum(c.values()) >= N_EVENTS and c,
            120,
            f"{N_EVENTS} events in ClickHouse",
        )
    assert set(landed) == unique
    assert set(landed.values()) == {1}
