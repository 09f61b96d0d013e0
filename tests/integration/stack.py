"""The local stack (deploy/local/stack.sh) seen from Python: settings, start/stop, topics.

Ports and paths come from deploy/local/env.sh itself (sourced in a shell), so the
defaults live in one place. Outage tests use ``stop_service``/``start_service`` or
``service_stopped``::

    from tests.integration.stack import service_stopped

    with service_stopped("clickhouse"):
        ...  # ClickHouse is down here; it is up again (and answering) afterwards
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[2]
STACK_SH = REPO / "deploy" / "local" / "stack.sh"
ENV_SH = REPO / "deploy" / "local" / "env.sh"
SERVICES = ("kafka", "clickhouse")

T = TypeVar("T")

_ENV_VARS = (
    "SIYU_LOCAL_DIR",
    "SIYU_KAFKA_VERSION",
    "SIYU_KAFKA_PORT",
    "SIYU_KAFKA_CONTROLLER_PORT",
    "SIYU_CLICKHOUSE_PORT",
    "SIYU_CLICKHOUSE_HTTP_PORT",
    "SIYU_STACK_TIMEOUT",
)


class StackError(RuntimeError):
    """deploy/local/stack.sh failed; the message carries its output."""


@functools.cache
def stack_env() -> dict[str, str]:
    """The stack's settings as env.sh computes them (environment overrides applied)."""
    script = f'source "{ENV_SH}" && ' + " && ".join(
        f'printf "%s=%s\\n" {name} "${name}"' for name in _ENV_VARS
    )
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def kafka_port() -> int:
    return int(stack_env()["SIYU_KAFKA_PORT"])


def kafka_bootstrap() -> str:
    return f"127.0.0.1:{kafka_port()}"


def clickhouse_port() -> int:
    """Native TCP port (clickhouse-driver, clickhouse-client)."""
    return int(stack_env()["SIYU_CLICKHOUSE_PORT"])


def clickhouse_http_port() -> int:
    return int(stack_env()["SIYU_CLICKHOUSE_HTTP_PORT"])


def run_stack(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run deploy/local/stack.sh with ``args``; raise StackError with its output on failure."""
    proc = subprocess.run(
        [str(STACK_SH), *args],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    if check and proc.returncode != 0:
        raise StackError(
            f"stack.sh {' '.join(args)} exited with {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
        )
    return proc


def _check_service(service: str) -> None:
    if service not in (*SERVICES, "all"):
        raise ValueError(f"unknown service {service!r}; expected one of {SERVICES} or 'all'")


def is_running(service: str) -> bool:
    """True when ``service`` (started by stack.sh) is running and answering."""
    _check_service(service)
    return run_stack("status", service, check=False).returncode == 0


def start_service(service: str = "all") -> None:
    """Start ``service`` (kafka, clickhouse or all) and return once it answers.

    Harmless when it already runs."""
    _check_service(service)
    run_stack("up", service)


def stop_service(service: str = "all") -> None:
    """Stop ``service`` (SIGTERM, then SIGKILL after a timeout). Harmless when stopped."""
    _check_service(service)
    run_stack("down", service)


def restart_service(service: str) -> None:
    stop_service(service)
    start_service(service)


@contextmanager
def service_stopped(service: str) -> Iterator[None]:
    """Stop ``service`` for the duration of the block; start it again afterwards."""
    stop_service(service)
    try:
        yield
    finally:
        start_service(service)


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval)


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topic(
    name: str | None = None,
    partitions: int = 4,
    config: Mapping[str, str | int] | None = None,
    bootstrap: str | None = None,
) -> str:
    """Create a topic (unique name by default) and wait until every partition has a leader."""
    from kafka.admin import KafkaAdminClient

    name = name or unique_name("topic")
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap or kafka_bootstrap(), client_id="siyu-tests"
    )
    try:
        admin.create_topics(
            {
                name: {
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "configs": {k: str(v) for k, v in (config or {}).items()},
                }
            },
            wait_for_metadata=True,
        )
    finally:
        admin.close()
    return name


def delete_topics(names: list[str], bootstrap: str | None = None) -> None:
    """Delete topics; missing ones are ignored."""
    from kafka.admin import KafkaAdminClient

    if not names:
        return
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap or kafka_bootstrap(), client_id="siyu-tests"
    )
    try:
        admin.delete_topics(names, raise_errors=False)
    finally:
        admin.close()


def topic_config(name: str, bootstrap: str | None = None) -> dict[str, str]:
    """The topic's non-default configuration, as the broker reports it."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap or kafka_bootstrap(), client_id="siyu-tests"
    )
    try:
        result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        admin.close()
    entries = result["topic"][name]
    return {key: str(entry["value"]) for key, entry in entries.items()}
