"""The stall watchdog's rule: input waiting and no committed progress for the timeout."""

from __future__ import annotations

from pipeline.watchdog import StallWatchdog

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
