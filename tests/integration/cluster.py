"""The local multi-node cluster (deploy/local/cluster.sh) seen from Python.

Nodes are ``zookeeper``, ``clickhouse1``.. and ``kafka1``..; ports come from
deploy/local/cluster_env.sh itself (sourced in a shell), so the defaults live in one place.
:func:`nodes_up` starts what is missing and stops, at the end, only what it started;
:func:`node_stopped` takes one node down for a block and brings it back afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.pipeline_env import PipelineEnv

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "deploy" / "local" / "cluster.sh"
_ENV_SH = (REPO / "deploy" / "local" / "env.sh", REPO / "deploy" / "local" / "cluster_env.sh")
_ENV_VARS = (
    "SIYU_CLUSTER_NAME",
    "SIYU_CLUSTER_ZK_PORT",
    "SIYU_CLUSTER_CH_REPLICAS",
    "SIYU_CLUSTER_CH_TCP_BASE",
    "SIYU_CLUSTER_KAFKA_BROKERS",
    "SIYU_CLUSTER_KAFKA_BASE",
)


class ClusterError(RuntimeError):
    """deploy/local/cluster.sh failed; the message carries its output."""


@functools.cache
def cluster_env() -> dict[str, str]:
    """The cluster's settings as cluster_env.sh computes them (environment overrides applied)."""
    script = " && ".join(f'source "{path}"' for path in _ENV_SH) + "".join(
        f' && printf "%s=%s\\n" {name} "${name}"' for name in _ENV_VARS
    )
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def cluster_name() -> str:
    return cluster_env()["SIYU_CLUSTER_NAME"]


def clickhouse_ports() -> list[int]:
    """Native TCP port of each ClickHouse replica, replica 1 first."""
    env = cluster_env()
    base = int(env["SIYU_CLUSTER_CH_TCP_BASE"])
    return [base + i for i in range(1, int(env["SIYU_CLUSTER_CH_REPLICAS"]) + 1)]


def kafka_ports() -> list[int]:
    env = cluster_env()
    base = int(env["SIYU_CLUSTER_KAFKA_BASE"])
    return [base + i for i in range(1, int(env["SIYU_CLUSTER_KAFKA_BROKERS"]) + 1)]


def kafka_bootstrap() -> str:
    return ",".join(f"127.0.0.1:{port}" for port in kafka_ports())


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run deploy/local/cluster.sh with ``args``; raise ClusterError with its output."""
    proc = subprocess.run(
        [str(CLUSTER_SH), *args],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        env=os.environ.copy(),
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise ClusterError(
            f"cluster.sh {' '.join(args)} exited with {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
        )
    return proc


def is_running(node: str) -> bool:
    return run("status", node, check=False).returncode == 0


def start(*nodes: str) -> None:
    run("up", *nodes)


def stop(*nodes: str) -> None:
    run("down", *nodes)


@contextmanager
def nodes_up(*nodes: str) -> Iterator[None]:
    """``nodes`` running for the block; afterwards stops those that were not running before
    (also when a test left them stopped or restarted them)."""
    started = [node for node in nodes if not is_running(node)]
    try:
        start(*nodes)
        yield
    finally:
        if started:
            stop(*started)


@contextmanager
def node_stopped(node: str) -> Iterator[None]:
    """``node`` stopped for the block, started again (and answering) afterwards."""
    stop(node)
    try:
        yield
    finally:
        start(node)


@dataclass
class ClusterEnv(PipelineEnv):
    """A private pipeline namespace with settings of its own on top (``extra`` wins), for
    pointing it at the cluster."""

    extra: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(**{**self.extra, **extra})

    @classmethod
    def make(cls, kafka_bootstrap: str, clickhouse_port: int, **extra: str) -> ClusterEnv:
        base = PipelineEnv.fresh(kafka_bootstrap, clickhouse_port)
        return cls(base.kafka_bootstrap, base.clickhouse_port, base.name, dict(extra))

    @property
    def database(self) -> str:
        return f"siyu_{self.name}"

    def with_settings(self, **extra: str) -> ClusterEnv:
        return dataclasses.replace(self, extra={**self.extra, **extra})
