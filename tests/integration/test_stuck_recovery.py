"""A table recovery that makes no progress stops the worker, for its supervisor to restart it.

Until a worker's tables are recovered it processes nothing, and Faust's recovery can wait for
ever: `No event received for active tp` every few seconds, and no end. It ends a changelog
partition's restore when it has read the record at the end offset minus one. The stuck
recovery is provoked here on a real broker with the simplest cause to arrange: the partition
ends in a transaction's commit marker, an offset no consumer is ever given (Faust's issue
#47; a changelog compacted by segment time is the same, #176). The worker must not wait for
ever: after SIYU_STALL_TIMEOUT_S without progress it says which partition is stuck, and
where, and exits with 75."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pipeline.worker.watchdog import ExitCode
from tests.integration.pipeline_env import PipelineEnv, Worker, produce, wait_for
from tests.integration.test_ingest_slice import _event
from tests.integration.test_topology import quiescent

_STALL_TIMEOUT_S = 6


def _last_record(bootstrap: str, tp: TopicPartition) -> tuple[int, bytes, bytes]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        assert end > 0, f"{tp} is empty"
        consumer.seek(tp, end - 1)
        records = consumer.poll(timeout_ms=10_000)[tp]
        return records[-1].offset, records[-1].key, records[-1].value
    finally:
        consumer.close()


def test_a_table_recovery_that_makes_no_progress_stops_the_worker(
    penv: PipelineEnv, tmp_path: Path
) -> None:
    s = penv.settings()
    worker = Worker(penv, tmp_path / "first.log")
    worker.wait_ready()
    events = [orjson.dumps(_event(i, "click")) for i in range(3)]
    produce(s.kafka_bootstrap, s.topic_events, events, partition=0)
    wait_for(lambda: quiescent(penv), 120, "the events processed", interval=0.3)
    assert worker.stop(signal.SIGTERM) == 0

    # The ingest agent's record of what it processed of events[0] is its table's changelog
    # partition 0. Its last record is written again, in a transaction: the same state, and
    # then a commit marker, which takes the partition's last offset.
    changelog = TopicPartition(f"{s.app_id}-ingest-offsets-changelog", 0)
    offset, key, value = _last_record(s.kafka_bootstrap, changelog)
    producer = KafkaProducer(
        bootstrap_servers=s.kafka_bootstrap, transactional_id=f"test-{uuid.uuid4().hex}"
    )
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(changelog.topic, value, key=key, partition=0)
    producer.commit_transaction()
    producer.close()

    worker = Worker(penv, tmp_path / "second.log", SIYU_STALL_TIMEOUT_S=str(_STALL_TIMEOUT_S))
    assert worker.proc.wait(timeout=120) == ExitCode.STALLED
    log = worker.log_path.read_text()
    # The record written again is restored; the marker after it never comes.
    assert (
        f"table recovery made no progress; exiting with {int(ExitCode.STALLED)} for a restart: "
        f"{changelog.topic}[0]: next changelog offset to restore {offset + 2} unchanged for "
    ) in log
    assert f"with input up to {offset + 3} waiting" in log
    worker.stop()
