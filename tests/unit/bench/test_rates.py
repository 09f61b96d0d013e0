"""tests/bench/rates.py: the split of a worker's live CPU into what any traffic costs and what
each event adds, and its table in the benchmark report."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.bench import report
from tests.bench.rates import fit, rates_problem, runs


@given(
    fixed=st.floats(0, 2),
    us_per_event=st.floats(0, 1_000),
    rates=st.lists(st.floats(10, 50_000), min_size=2, max_size=6, unique=True),
)
def test_a_line_through_exact_points_gives_back_its_fixed_part_and_slope(
    fixed: float, us_per_event: float, rates: list[float]
) -> None:
    points = [(r, fixed + us_per_event * 1e-6 * r) for r in rates]
    got_fixed, got_us = fit(points)
    assert got_fixed == pytest.approx(fixed, abs=1e-6)
    assert got_us == pytest.approx(us_per_event, abs=1e-3)


def test_noisy_runs_are_averaged_not_taken_from_one_run() -> None:
    # Two runs per rate, one high and one low by the same amount: the line goes between.
    points = [(500, 0.20), (500, 0.24), (2000, 0.40), (2000, 0.44)]
    fixed, us = fit(points)
    assert fixed == pytest.approx(0.22 - 500 * 0.2 / 1500)
    assert us == pytest.approx(0.2 / 1500 * 1e6)


def test_one_rate_gives_no_line() -> None:
    with pytest.raises(ValueError, match="two different rates"):
        fit([(1000, 0.3), (1000, 0.31)])


def test_the_report_has_a_row_per_rate_and_the_split() -> None:
    def summary(rate: float, cpu: list[float], cores: list[float]) -> dict[str, object]:
        runs = [{"cpu_us_per_event": c, "cores": k} for c, k in zip(cpu, cores, strict=True)]
        return report.summarise(runs) | {"rate": rate}

    rates = {
        "seconds": 20.0,
        "rounds": 2,
        "rates": [summary(500, [430, 450], [0.21, 0.23]), summary(2000, [210, 220], [0.42, 0.44])],
        "fixed_cores": 0.153,
        "us_per_event": 140.4,
    }
    text = report.markdown({"meta": {"when": "now", "setup": "here"}, "rates": rates})
    assert "| 500 | 440 (430–450) | 0.22 (0.21–0.23) |" in text
    assert "| 2,000 | 215 (210–220) | 0.43 (0.42–0.44) |" in text
    assert "0.15 of a core with any traffic, plus 140 µs per event" in text


def test_rates_that_cannot_give_a_line_are_refused_before_any_run() -> None:
    assert rates_problem([500, 1000, 2000]) is None
    assert rates_problem([500, 500]) is not None
    assert rates_problem([0, 1000]) is not None
    with pytest.raises(ValueError, match="two different rates"):
        runs("127.0.0.1:9", 9, [1000], seconds=1, rounds=1)  # no stack is touched
