"""The Faust app built from settings: what a deployment configures reaches Faust.

Building the app connects to nothing, so these run without Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from faust.types import TP

from pipeline.kafka.offsets import OffsetReader
from pipeline.settings import load_settings
from pipeline.worker.app import create_app
from pipeline.worker.faust.recovery import restore_positions
from pipeline.worker.watchdog import ExitCode


@pytest.mark.parametrize("replicas", [0, 2])
def test_standby_replicas_setting_reaches_the_partition_assignor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, replicas: int
) -> None:
    monkeypatch.setenv("SIYU_STANDBY_REPLICAS", str(replicas))
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    app = create_app(load_settings())
    assert app.conf.table_standby_replicas == replicas
    # The assignor is what places standby partitions on other workers.
    assert app.assignor.replicas == replicas


def test_standby_replicas_default_keeps_one_warm_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv("SIYU_STANDBY_REPLICAS", raising=False)
    assert load_settings().standby_replicas == 1


def test_the_freeze_fence_is_armed_and_watched_from_the_first_assignment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker frozen right after its first assignment (in its table recovery, or before
    the loop-lag watcher woke once) is stopped at the watcher's first wake."""
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    app = create_app(load_settings())
    fence = app.freeze_fence
    now = [0.0]
    stopped: list[float] = []
    fence.clock, fence.on_frozen = (lambda: now[0]), (lambda gap, limit: stopped.append(gap))

    async def main() -> None:
        await asyncio.sleep(0.3)
        assert not fence.armed
        await app.on_partitions_assigned.send(set())
        assert fence.armed
        futures = set(app._futures)
        now[0] = 60.0  # frozen at once
        for _ in range(100):
            if stopped:
                break
            await asyncio.sleep(0.05)
        await app.on_partitions_assigned.send(set())  # a later assignment
        assert app._futures == futures  # started no second watcher
        await app._stop_futures()

    asyncio.run(main())
    assert stopped == [60.0]


def test_the_stall_watchdog_watches_the_table_recovery_from_the_first_assignment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker whose first table recovery stands still (Faust waits for a changelog record
    that never comes) exits for a restart. The recovery's state is set by hand here;
    tests/integration/test_stuck_recovery.py gets it stuck on a real broker."""
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SIYU_STALL_TIMEOUT_S", "0.4")
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(logging, "shutdown", lambda: None)
    # The broker's answer: the changelog partition holds offsets 0..9.
    asked: list[list[tuple[str, int]]] = []
    ends = {("t-changelog", 0): 10}
    monkeypatch.setattr(OffsetReader, "__call__", lambda self, tps: asked.append(tps) or ({}, ends))
    app = create_app(load_settings())
    recovery = app.tables.recovery
    tp = TP("t-changelog", 0)
    recovery.active_tps = {tp}
    recovery.active_offsets[tp] = 4  # restored up to offset 4
    recovery.in_recovery = True

    async def main() -> None:
        await asyncio.sleep(0.6)
        assert not exits  # not watched before the first assignment
        await app.on_partitions_assigned.send(set())
        for _ in range(100):
            if exits:
                break
            await asyncio.sleep(0.05)
        await app._stop_futures()

    with caplog.at_level(logging.CRITICAL, logger="pipeline.worker.watchdog"):
        asyncio.run(main())
    assert exits[:1] == [ExitCode.STALLED]
    assert asked[0] == [("t-changelog", 0)]
    assert (
        "table recovery made no progress; exiting with 75 for a restart: t-changelog[0]: "
        "next changelog offset to restore 5 unchanged for "
    ) in caplog.text
    assert "with input up to 10 waiting" in caplog.text


def test_the_next_offset_to_restore_is_read_from_what_faust_keeps(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Faust keeps the last offset restored per partition: -1, None or nothing before the
    first record (a None crashed a worker in the frozen-worker test)."""
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    recovery = create_app(load_settings()).tables.recovery
    tps = [TP("c", p) for p in range(4)]
    recovery.active_tps = set(tps)
    recovery.active_offsets.update({tps[0]: 4, tps[1]: -1, tps[2]: None})
    assert restore_positions(recovery) == {("c", 0): 5, ("c", 1): 0, ("c", 2): 0, ("c", 3): 0}


def test_a_fault_in_the_stall_watchdog_is_logged_and_it_looks_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SIYU_STALL_TIMEOUT_S", "0.2")

    def broken(recovery: object) -> dict[tuple[str, int], int]:
        raise TypeError("a bug in the watch")

    monkeypatch.setattr("pipeline.worker.faust.recovery.restore_positions", broken)
    app = create_app(load_settings())
    app.tables.recovery.in_recovery = True

    async def main() -> None:
        await app.on_partitions_assigned.send(set())
        await asyncio.sleep(0.5)
        await app._stop_futures()

    with caplog.at_level(logging.ERROR, logger="pipeline.worker.watchdog"):
        asyncio.run(main())
    assert caplog.text.count("the stall watchdog failed to look; it looks again") >= 2
    assert "a bug in the watch" in caplog.text


def test_a_table_recovery_is_not_judged_while_kafka_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SIYU_STALL_TIMEOUT_S", "0.2")
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(logging, "shutdown", lambda: None)

    def away(self: OffsetReader, tps: list[tuple[str, int]]) -> None:
        raise ConnectionError("broker away")

    monkeypatch.setattr(OffsetReader, "__call__", away)
    app = create_app(load_settings())
    recovery = app.tables.recovery
    tp = TP("t-changelog", 0)
    recovery.active_tps = {tp}
    recovery.active_offsets[tp] = 4
    recovery.in_recovery = True

    async def main() -> None:
        await app.on_partitions_assigned.send(set())
        await asyncio.sleep(1.0)  # 20 looks, 5 stall timeouts
        await app._stop_futures()

    with caplog.at_level(logging.WARNING, logger="pipeline.worker.watchdog"):
        asyncio.run(main())
    assert exits == []
    assert "stall watchdog could not read offsets: broker away" in caplog.text


def test_health_and_readiness_pages_are_registered(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    app = create_app(load_settings())
    assert {"/healthz", "/readyz"} <= set(app.web.views)
