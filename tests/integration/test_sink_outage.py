"""The sink through a ClickHouse outage: consumption pauses, nothing is lost or doubled."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.sink.clickhouse import client_from_url
from tests.integration import stack
from tests.integration.pipeline_env import PipelineEnv, running_worker
from tests.integration.test_topology import assert_equals_oracle, send_paced
from tests.oracle import recompute
from tests.scenario import Scenario
from tests.views_oracle import assert_views_match


def test_clickhouse_down_for_30s_mid_stream_then_every_result_equals_the_oracle(
    penv: PipelineEnv, small_scenario: Scenario, tmp_path: Path
) -> None:
    expected = recompute(small_scenario.arrival)
    third = len(small_scenario.arrival) // 3
    log = tmp_path / "worker.log"
    with running_worker(penv, log):
        send_paced(penv, small_scenario.arrival[:third])
        stack.stop_service("clickhouse")
        try:
            # Events keep coming while ClickHouse is away (at live pace: the state agents go
            # on); the sink retries with backoff and commits nothing it could not insert.
            started = time.monotonic()
            send_paced(penv, small_scenario.arrival[third : 2 * third], include_sink=False)
            time.sleep(max(0.0, 30 - (time.monotonic() - started)))
        finally:
            stack.start_service("clickhouse")
        send_paced(penv, small_scenario.arrival[2 * third :])
    assert_equals_oracle(penv, expected)
    client = client_from_url(penv.settings().clickhouse_url)
    try:
        assert_views_match(client, small_scenario.events, expected)
    finally:
        client.disconnect()
    assert "ClickHouse insert into" in log.read_text(), "the outage was not noticed"
