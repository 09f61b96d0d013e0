"""A worker frozen past its session timeout, while another takes its partitions over.

SIGSTOP stands for what freezes a process in production: a VM or container paused, a
CPU quota exhausted, the event loop held by one long step. While it is frozen the group
gives its partitions to the other worker, which re-reads them from the last commit and
goes on. Thawed, the frozen worker would finish the batches it was in the middle of, a
zombie until it learns that it lost the partitions, and its writes would land after the new
owner's. Its freeze fence stops it first (exit 76, pipeline/worker/watchdog.py); the test starts
it again, as a supervisor would, and the result must equal the batch oracle."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.worker.faust.aiokafka import fence_produce_requests
from pipeline.worker.watchdog import ExitCode
from tests.integration import stack
from tests.integration.pipeline_env import (
    PipelineEnv,
    Worker,
    read_messages,
    stable_members,
    stop_together,
    wait_all_assigned,
    wait_for,
)
from tests.integration.test_topology import assert_equals_oracle, in_steps, send, settle_workers
from tests.oracle import recompute
from tests.scenario import Scenario

#: The broker's smallest session timeout (group.min.session.timeout.ms), to freeze less.
_SESSION_TIMEOUT_S = 6.0


class Frozen(Exception):
    pass


def test_a_produce_request_after_the_fence_tripped_never_reaches_kafka(penv: PipelineEnv) -> None:
    bootstrap = penv.settings().kafka_bootstrap
    topic = stack.create_topic(f"{penv.name}.fenced", partitions=1, bootstrap=bootstrap)
    frozen = False
    checked = 0

    def check() -> None:
        nonlocal checked
        checked += 1
        if frozen:
            raise Frozen  # the worker's fence exits the process here

    async def main() -> None:
        nonlocal frozen
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            fence_produce_requests(producer.client, check)
            await (await producer.send(topic, b"before the freeze"))
            frozen = True
            with pytest.raises(KafkaError):
                await (await producer.send(topic, b"after the freeze"))
        finally:
            await producer.stop()

    asyncio.run(main())
    assert checked == 2
    on_the_topic = [m.value for m in read_messages(bootstrap, topic, 1)]
    assert on_the_topic == [b"before the freeze"]


def test_a_worker_frozen_past_its_session_timeout_stops_and_nothing_is_lost_or_doubled(
    penv: PipelineEnv, small_scenario: Scenario, tmp_path: Path
) -> None:
    """At each step but the first, one of two workers is frozen while the step is processed,
    for longer than the session timeout, then thawed: it stops (exit 76) and is started
    again. Then every worker is stopped, a fresh one restores all states from the
    changelogs, and the last steps follow: what the changelogs hold is checked too."""
    rng = random.Random(5)
    expected = recompute(small_scenario.arrival)
    steps = in_steps(small_scenario.arrival)
    restore_at = len(steps) - 3
    env = {"SIYU_SESSION_TIMEOUT_S": str(_SESSION_TIMEOUT_S)}
    workers = [Worker(penv, tmp_path / "a.log", **env), Worker(penv, tmp_path / "b.log", **env)]
    try:
        for w in workers:
            w.wait_ready()
        for n, step in enumerate(steps[:restore_at]):
            if n > 0:
                # A worker frozen before its first assignment has nothing to fence: the
                # one to freeze must have joined and taken its partitions first.
                wait_all_assigned(penv, workers)
            send(penv, step)
            if n > 0:
                frozen = workers[0]
                time.sleep(rng.uniform(0.05, 0.5))  # batches of the step in flight
                frozen.proc.send_signal(signal.SIGSTOP)
                # A session timeout later the group drops it, and the other worker takes
                # its partitions over.
                wait_for(lambda: stable_members(penv) == 1, 60, "the frozen worker dropped")
                frozen.proc.send_signal(signal.SIGCONT)
                # Thawed, it finds it was frozen past its fence's limit and stops.
                assert frozen.proc.wait(timeout=60) == ExitCode.FROZEN
                assert "this worker was frozen for" in frozen.log_path.read_text()
                frozen.stop()
                workers[0] = frozen.again(tmp_path / f"a{n}.log")
                workers[0].wait_ready()
            settle_workers(penv, workers, tmp_path / f"step{n}")
    finally:
        workers[0].proc.send_signal(signal.SIGCONT)
        codes = stop_together(workers)
    assert codes == [0, 0]
    # A fresh worker (memory store) restores every state from the changelogs.
    workers = [Worker(penv, tmp_path / "fresh.log")]
    try:
        workers[0].wait_ready()
        for n, step in enumerate(steps[restore_at:], start=restore_at):
            send(penv, step)
            settle_workers(penv, workers, tmp_path / f"step{n}")
    finally:
        workers[0].stop()
    assert_equals_oracle(penv, expected)
