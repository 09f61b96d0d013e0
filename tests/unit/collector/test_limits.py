"""The in-flight gate: bounded requests and bytes; tickets given back exactly once."""

from __future__ import annotations

from pipeline.collector.limits import Gate


def test_requests_are_bounded() -> None:
    gate = Gate(max_requests=2, max_bytes=1000)
    a, b = gate.try_acquire(10), gate.try_acquire(10)
    assert a and b
    assert gate.try_acquire(10) is None
    a.release()
    a.release()  # twice is harmless
    assert gate.requests == 1
    assert gate.try_acquire(10) is not None


def test_bytes_are_bounded_and_shrink_gives_back() -> None:
    gate = Gate(max_requests=10, max_bytes=100)
    big = gate.try_acquire(80)
    assert big is not None
    assert gate.try_acquire(30) is None
    big.shrink(50)
    assert gate.bytes == 50
    small = gate.try_acquire(30)
    assert small is not None
    big.release()
    small.release()
    assert (gate.requests, gate.bytes) == (0, 0)


def test_one_oversized_request_passes_when_alone() -> None:
    gate = Gate(max_requests=10, max_bytes=100)
    t = gate.try_acquire(500)
    assert t is not None
    assert gate.try_acquire(1) is None
    t.release()
    assert gate.bytes == 0
