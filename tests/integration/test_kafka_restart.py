"""Kafka restarting under traffic: the worker reconnects, and nothing is lost or doubled.

The broker goes down while a step's batches are in flight: produce requests fail, fetches
fail, the group's coordinator goes away and comes back loading its offsets. This test acts
as the worker's supervisor as the SIGKILL test does (a stalled worker exits and is started
again), and the result must equal the batch oracle."""

from __future__ import annotations

import time
from pathlib import Path

from tests.integration import stack
from tests.integration.pipeline_env import PipelineEnv, Worker
from tests.integration.test_topology import (
    _STALL_TIMEOUT,
    assert_equals_oracle,
    in_steps,
    send,
    settle,
)
from tests.oracle import recompute
from tests.scenario import Scenario


def test_a_kafka_restart_under_traffic_loses_and_doubles_nothing(
    penv: PipelineEnv, small_scenario: Scenario, tmp_path: Path
) -> None:
    expected = recompute(small_scenario.arrival)
    steps = in_steps(small_scenario.arrival)
    worker = Worker(penv, tmp_path / "worker0.log", SIYU_STALL_TIMEOUT_S=_STALL_TIMEOUT)
    worker.wait_ready()
    for n, step in enumerate(steps):
        send(penv, step)
        if n == len(steps) // 2:
            time.sleep(0.3)  # batches in flight, offsets not committed
            stack.restart_service("kafka")
        worker, _ = settle(penv, worker, tmp_path / f"step{n}")
    assert worker.proc.poll() is None
    worker.stop()
    assert_equals_oracle(penv, expected)
