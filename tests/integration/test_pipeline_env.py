"""The test harness's own promise: a namespace's cleanup stops the processes it started
that a failing test left running, so no orphaned worker goes on consuming the shared stack
(one did, for twelve minutes, before this)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.pipeline_env import PipelineEnv, Worker


def test_cleanup_stops_the_workers_a_failed_test_left_running(
    kafka_bootstrap: str, clickhouse_port: int, tmp_path: Path
) -> None:
    env = PipelineEnv.fresh(kafka_bootstrap, clickhouse_port)
    other = PipelineEnv.fresh(kafka_bootstrap, clickhouse_port)
    try:
        assert env.siyu("migrate").returncode == 0
        worker = Worker(env, tmp_path / "worker.log")
        worker.wait_ready()
        bystander = Worker(other, tmp_path / "other.log")  # another namespace's: left alone
        env.cleanup()
        assert worker.proc.poll() is not None, "the namespace's worker still runs"
        assert bystander.proc.poll() is None, "another namespace's process was stopped"
    finally:
        other.cleanup()
    assert bystander.proc.poll() is not None
