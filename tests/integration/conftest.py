"""Fixtures for tests against the real local Kafka and ClickHouse (deploy/local/stack.sh).

- ``local_stack`` (session): makes sure both services run; at the end of the session
  stops only those this session started, so a developer's running stack is left alone.
- ``kafka_bootstrap`` / ``clickhouse_port``: where they listen (env.sh settings).
- ``fresh_topic``: a factory creating uniquely named topics, deleted afterwards.
- ``penv``: a private pipeline namespace with a migrated database (see pipeline_env.py).

Every test under tests/integration/ is marked ``integration``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.integration import stack
from tests.integration.pipeline_env import PipelineEnv
from tests.scenario import Scenario, generate

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_stack() -> Iterator[dict[str, str]]:
    """Kafka and ClickHouse up for the session; returns the stack settings (env.sh)."""
    already = {svc: stack.is_running(svc) for svc in stack.SERVICES}
    started = [svc for svc, running in already.items() if not running]
    try:
        stack.start_service("all")
        yield stack.stack_env()
    finally:
        # Also stops a service a test left stopped or restarted, if we started it.
        for svc in reversed(started):
            stack.stop_service(svc)


@pytest.fixture(scope="session")
def kafka_bootstrap(local_stack: dict[str, str]) -> str:
    return f"127.0.0.1:{local_stack['SIYU_KAFKA_PORT']}"


@pytest.fixture(scope="session")
def clickhouse_port(local_stack: dict[str, str]) -> int:
    return int(local_stack["SIYU_CLICKHOUSE_PORT"])


FreshTopic = Callable[..., str]


@pytest.fixture
def fresh_topic(kafka_bootstrap: str) -> Iterator[FreshTopic]:
    """``fresh_topic(partitions=4, config=None, prefix="topic") -> name``, deleted afterwards."""
    created: list[str] = []

    def make(
        partitions: int = 4, config: Mapping[str, str | int] | None = None, prefix: str = "topic"
    ) -> str:
        name = stack.create_topic(
            stack.unique_name(prefix), partitions, config, bootstrap=kafka_bootstrap
        )
        created.append(name)
        return name

    yield make
    if created and stack.is_running("kafka"):
        stack.delete_topics(created, bootstrap=kafka_bootstrap)


@pytest.fixture
def penv(kafka_bootstrap: str, clickhouse_port: int) -> Iterator[PipelineEnv]:
    """A private namespace on the stack (topics, groups, a migrated database), dropped after."""
    env = PipelineEnv.fresh(kafka_bootstrap, clickhouse_port)
    done = env.siyu("migrate")
    assert done.returncode == 0, done.stderr
    yield env
    env.cleanup()


@pytest.fixture(scope="session")
def scenario() -> Scenario:
    """Fourteen days of two brands' events (tests/scenario.py)."""
    return generate(seed=20261123, n_events=3000)


@pytest.fixture(scope="session")
def small_scenario() -> Scenario:
    """Seven days of events, for the tests that restart or add workers (slower per step)."""
    return generate(seed=1123, n_events=1500)
