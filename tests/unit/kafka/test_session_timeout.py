"""The session timeout check at a worker's start: the brokers' bounds, the tightest of them."""

from __future__ import annotations

from pipeline.kafka.topics import MAX_SESSION, MIN_SESSION, session_timeout_problem

DEFAULTS = {MIN_SESSION: "6000", MAX_SESSION: "1800000"}  # Kafka's defaults


def test_a_timeout_within_the_brokers_bounds_is_accepted() -> None:
    assert session_timeout_problem(10, {"1": DEFAULTS}) is None
    assert session_timeout_problem(6, {"1": DEFAULTS}) is None
    assert session_timeout_problem(1800, {"1": DEFAULTS}) is None


def test_a_timeout_outside_them_is_refused_with_the_bounds_named() -> None:
    low = session_timeout_problem(1, {"1": DEFAULTS})
    assert low is not None
    assert "SIYU_SESSION_TIMEOUT_S=1 " in low and "6 to 1800 s" in low and MIN_SESSION in low
    high = session_timeout_problem(3600, {"1": DEFAULTS})
    assert high is not None and "SIYU_SESSION_TIMEOUT_S=3600 " in high


def test_the_tightest_broker_decides_since_any_may_coordinate_the_group() -> None:
    brokers = {"1": DEFAULTS, "2": {MIN_SESSION: "12000", MAX_SESSION: "60000"}}
    assert session_timeout_problem(10, brokers) is not None
    assert session_timeout_problem(12, brokers) is None
    assert session_timeout_problem(61, brokers) is not None


def test_bounds_a_broker_does_not_report_do_not_refuse_anything() -> None:
    assert session_timeout_problem(0.5, {"1": {}}) is None
