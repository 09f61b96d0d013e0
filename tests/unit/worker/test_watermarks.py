"""Ingest announces event-time progress only after `hops` rounds of the by-* topics being
processed to the ends they had: the watermark never overtakes messages still in flight."""

from __future__ import annotations

from pipeline.worker.watermarks import ConfirmedProgress

A, B = ("by-user", 0), ("by-share", 0)


def test_progress_is_confirmed_after_the_given_rounds_of_catching_up() -> None:
    cp = ConfirmedProgress(hops=2)
    # Poll 1: progress 100 published; the topics end at 10 and 5, nothing processed yet.
    assert cp.observe({0: 100}, {A: 0, B: 0}, {A: 10, B: 5}) == {}
    # Poll 2: only A caught up: the first round is not complete.
    assert cp.observe({0: 100}, {A: 10, B: 3}, {A: 12, B: 5}) == {}
    # Poll 3: both reached 10/5 (round 1 done; what it caused ends at 14/9 now).
    assert cp.observe({0: 100}, {A: 10, B: 5}, {A: 14, B: 9}) == {}
    # Poll 4: the consequences (14/9) are processed too: round 2 done, 100 is confirmed.
    assert cp.observe({0: 100}, {A: 14, B: 9}, {A: 14, B: 9}) == {0: 100}


def test_later_progress_waits_for_its_own_rounds() -> None:
    cp = ConfirmedProgress(hops=1)
    cp.observe({0: 100, 1: 50}, {A: None}, {A: 4})
    # New progress published while the first round is pending; it starts its own round.
    assert cp.observe({0: 200, 1: 60}, {A: 2}, {A: 8}) == {}
    assert cp.observe({0: 200, 1: 60}, {A: 4}, {A: 8}) == {0: 100, 1: 50}
    assert cp.observe({0: 200, 1: 60}, {A: 8}, {A: 8}) == {0: 200, 1: 60}


def test_a_topic_never_committed_counts_from_zero_and_empty_topics_do_not_block() -> None:
    cp = ConfirmedProgress(hops=1)
    cp.observe({0: 7}, {A: -1, B: None}, {A: 0, B: 0})
    assert cp.observe({0: 7}, {A: -1, B: None}, {A: 0, B: 0}) == {0: 7}


def test_confirmed_progress_never_goes_back() -> None:
    cp = ConfirmedProgress(hops=1)
    cp.observe({0: 100}, {A: 0}, {A: 0})
    cp.observe({0: 90}, {A: 0}, {A: 0})  # e.g. after a rebalance, another worker's view
    assert cp.observe({0: 90}, {A: 0}, {A: 0}) == {0: 100}
