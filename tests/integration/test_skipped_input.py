"""Input an agent did not process is never skipped silently.

Each agent records, per partition, the last input offset it processed (pipeline/worker/ingest.py,
pipeline/worker/state.py).
When the next message it is given is further on, the messages in between were skipped:
by the consumer (faust-streaming can do that after a rebalance, and then commits past them;
the worker stops before acknowledging, so that a restart reads them), by retention, or by an
operator who moved the group's committed offset. This test takes the last path for real,
the one that can be provoked on purpose: the worker must say what was skipped, and why,
and go on with what follows."""

from __future__ import annotations

import signal
from pathlib import Path

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from tests.integration.pipeline_env import PipelineEnv, Worker, produce, wait_for
from tests.integration.test_ingest_slice import _event
from tests.integration.test_topology import quiescent, settle_workers


def _ids(penv: PipelineEnv) -> set[str]:
    return {str(r[0]) for r in penv.query("SELECT event_id FROM events FINAL")}


def test_input_skipped_by_moving_the_committed_offset_is_logged_and_the_rest_goes_on(
    penv: PipelineEnv, tmp_path: Path
) -> None:
    s = penv.settings()
    events = [orjson.dumps(_event(i, "click")) for i in range(8)]
    worker = Worker(penv, tmp_path / "first.log")  # it creates the topics
    worker.wait_ready()
    produce(s.kafka_bootstrap, s.topic_events, events[:3], partition=0)
    wait_for(lambda: quiescent(penv), 120, "the first events processed", interval=0.3)
    assert worker.stop(signal.SIGTERM) == 0
    assert _ids(penv) == {"ev-0", "ev-1", "ev-2"}

    # Offsets 3..7 arrive while no worker runs; an operator skips 3..5.
    produce(s.kafka_bootstrap, s.topic_events, events[3:], partition=0)
    tp = TopicPartition(s.topic_events, 0)
    mover = KafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap, group_id=s.app_id, enable_auto_commit=False
    )
    mover.assign([tp])
    mover.commit({tp: OffsetAndMetadata(6, "", -1)})
    mover.close()

    # A worker that consumes nothing after its start (rare, inside Faust; its stall watchdog
    # stops it) is started again, as its supervisor would.
    workers = [Worker(penv, tmp_path / "second.log", SIYU_STALL_TIMEOUT_S="8")]
    workers[0].wait_ready()
    settle_workers(penv, workers, tmp_path)
    assert workers[0].stop(signal.SIGTERM) == 0
    assert _ids(penv) == {"ev-0", "ev-1", "ev-2", "ev-6", "ev-7"}
    logs = "".join(log.read_text() for log in [tmp_path / "second.log", *tmp_path.glob("restart*")])
    assert (
        f"{s.topic_events}[0] offsets 3..5 skipped: the group's committed offset was moved "
        "past them, to 6" in logs
    ), logs[-3000:]
