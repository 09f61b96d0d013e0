"""The stall watchdog's rule: input waiting and no committed progress for the timeout; the
event loop's lag, measured and warned about; and the freeze fence."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.worker.watchdog import FreezeFence, StallWatchdog, skipped_input, watch_loop_lag

TP = ("siyu.by-user", 0)
OTHER = ("siyu.events", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_partition_with_input_waiting_and_no_progress_is_stuck_after_the_timeout() -> None:
    clock = Clock()
    dog = StallWatchdog(60, clock)
    assert dog.observe({TP: 10}, {TP: 50}) == []
    clock.now = 59
    assert dog.observe({TP: 10}, {TP: 50}) == []
    clock.now = 60
    stuck = dog.observe({TP: 10, OTHER: 3}, {TP: 50, OTHER: 3})
    assert len(stuck) == 1 and "siyu.by-user[0]" in stuck[0] and "50" in stuck[0]


def test_progress_restarts_the_clock() -> None:
    clock = Clock()
    dog = StallWatchdog(60, clock)
    dog.observe({TP: 10}, {TP: 50})
    clock.now = 50
    assert dog.observe({TP: 11}, {TP: 50}) == []
    clock.now = 100
    assert dog.observe({TP: 11}, {TP: 50}) == []
    clock.now = 110
    assert dog.observe({TP: 11}, {TP: 60}) != []


def test_an_idle_partition_is_never_stuck() -> None:
    clock = Clock()
    dog = StallWatchdog(60, clock)
    for t in range(0, 1000, 30):
        clock.now = t
        assert dog.observe({TP: 50, OTHER: None}, {TP: 50, OTHER: 0}) == []


def test_a_partition_never_committed_with_input_counts_as_waiting() -> None:
    clock = Clock()
    dog = StallWatchdog(60, clock)
    dog.observe({TP: None}, {TP: 5})
    clock.now = 61
    assert dog.observe({TP: -1}, {TP: 5}) == []  # -1 is "none" too, but a change of record
    clock.now = 122
    assert dog.observe({TP: -1}, {TP: 5}) != []


def test_reset_forgets_the_waiting_time() -> None:
    clock = Clock()
    dog = StallWatchdog(60, clock)
    dog.observe({TP: 10}, {TP: 50})
    clock.now = 59
    dog.reset()  # e.g. a rebalance
    clock.now = 100
    assert dog.observe({TP: 10}, {TP: 50}) == []
    clock.now = 160
    assert dog.observe({TP: 10}, {TP: 50}) != []


def test_the_loop_lag_is_how_long_the_loop_was_held_and_a_long_hold_is_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lags: list[float] = []

    async def main() -> None:
        watcher = asyncio.ensure_future(watch_loop_lag(lags.append, 0.2, every_s=0.02))
        while len(lags) < 3:  # a free loop first
            await asyncio.sleep(0.01)
        time.sleep(0.3)  # holds the loop, as a long synchronous step would
        held = len(lags)
        while len(lags) < held + 2:
            await asyncio.sleep(0.01)
        watcher.cancel()

    with caplog.at_level(logging.WARNING, logger="pipeline.worker.watchdog"):
        asyncio.run(main())
    # The watcher was asleep when the hold began, due 0.02 s later; it woke after the hold.
    longest = max(lags)
    assert longest >= 0.28
    # Each lag of 0.2 s or more, and only those, is warned about (one, unless the machine
    # itself held the loop too).
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == sum(lag >= 0.2 for lag in lags) >= 1
    assert any(f"{longest:.1f} s late" in w for w in warnings)


class Frozen(Exception):
    pass


def _stop(frozen_s: float, limit_s: float) -> None:
    raise Frozen(frozen_s, limit_s)


def test_an_armed_fence_stops_a_worker_whose_watcher_woke_after_the_limit() -> None:
    clock = Clock()
    fence = FreezeFence(5.0, _stop, clock)
    fence.arm()
    for t in (0.0, 0.25, 0.5, 4.9, 9.8):  # gaps under 5 s: a busy loop, not a freeze
        clock.now = t
        fence.awake()
        fence.check()
    clock.now = 14.8
    with pytest.raises(Frozen) as stopped:
        fence.awake()
    assert stopped.value.args == (pytest.approx(5.0), 5.0)


def test_an_armed_fence_stops_a_produce_request_that_comes_before_the_watcher_wakes() -> None:
    clock = Clock()
    fence = FreezeFence(5.0, _stop, clock)
    fence.arm()
    fence.awake()
    clock.now = 4.99
    fence.check()
    clock.now = 11.0  # thawed: the batch in flight runs on before the watcher's timer
    with pytest.raises(Frozen) as stopped:
        fence.check()
    assert stopped.value.args[0] == pytest.approx(11.0)


def test_a_fence_is_harmless_until_armed() -> None:
    clock = Clock()
    fence = FreezeFence(5.0, _stop, clock)
    fence.awake()
    clock.now = 200.0  # a start-up that held the loop, before any partition was owned
    fence.awake()
    fence.check()
    fence.arm()
    clock.now = 204.9
    fence.check()
    fence.awake()


def test_a_freeze_right_after_arming_is_measured_from_the_arming() -> None:
    """Armed at the first assignment, frozen before the watcher's first wake: the gap
    counts from the arming."""
    clock = Clock()
    fence = FreezeFence(5.0, _stop, clock)
    clock.now = 30.0
    fence.arm()
    clock.now = 36.0
    with pytest.raises(Frozen) as stopped:
        fence.awake()
    assert stopped.value.args == (pytest.approx(6.0), 5.0)
    fence = FreezeFence(5.0, _stop, clock)
    fence.arm()
    clock.now = 42.0  # not woken since: the produce request after the thaw is stopped
    with pytest.raises(Frozen):
        fence.check()


def test_arming_again_does_not_move_the_watch() -> None:
    """Every later assignment arms again: the gap still counts from the last wake."""
    clock = Clock()
    fence = FreezeFence(5.0, _stop, clock)
    fence.arm()
    clock.now = 4.0
    fence.arm()
    clock.now = 6.0
    with pytest.raises(Frozen):
        fence.awake()


def test_the_loop_lag_watcher_wakes_the_fence_after_recording_the_lag() -> None:
    events: list[str] = []

    async def main() -> None:
        watcher = asyncio.ensure_future(
            watch_loop_lag(
                lambda lag: events.append("lag"),
                1.0,
                every_s=0.01,
                awake=lambda: events.append("awake"),
            )
        )
        while len(events) < 4:
            await asyncio.sleep(0.01)
        watcher.cancel()

    asyncio.run(main())
    assert events[:4] == ["lag", "awake", "lag", "awake"]


def test_a_hole_in_an_agents_input_is_told_apart_by_where_the_offsets_are() -> None:
    # Processed up to 7, given 10 now: 8 and 9 are missing.
    assert skipped_input(done=7, first=8, committed=8, start=0) is None
    assert skipped_input(done=-1, first=5, committed=None, start=0) is None  # nothing yet
    assert skipped_input(done=7, first=10, committed=8, start=0) == "undelivered"
    assert skipped_input(done=7, first=10, committed=None, start=0) == "undelivered"
    assert skipped_input(done=7, first=10, committed=10, start=0) == "moved"
    assert skipped_input(done=7, first=10, committed=9, start=0) == "moved"
    assert skipped_input(done=7, first=10, committed=8, start=10) == "deleted"
    # 8 was deleted, 9 is still there and was not delivered.
    assert skipped_input(done=7, first=10, committed=8, start=9) == "undelivered"
    assert skipped_input(done=7, first=10, committed=9, start=9) == "undelivered"


@given(
    done=st.integers(-1, 50),
    gap=st.integers(0, 20),
    start=st.integers(0, 80),
    committed=st.none() | st.integers(0, 80),
)
def test_only_offsets_that_exist_and_were_meant_to_be_read_stop_the_worker(
    done: int, gap: int, start: int, committed: int | None
) -> None:
    first = done + 1 + gap
    verdict = skipped_input(done, first, committed, start)
    existing = [o for o in range(done + 1, first) if o >= start] if done >= 0 else []
    if done < 0 or gap == 0:
        assert verdict is None
    elif not existing:
        assert verdict == "deleted"
    elif committed is not None and committed > existing[0]:
        assert verdict == "moved"
    else:
        assert verdict == "undelivered"
