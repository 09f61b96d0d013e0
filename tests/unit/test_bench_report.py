"""bench/report.py: what the benchmark's table says of its figures."""

from __future__ import annotations

from bench import report


def test_the_scaling_report_does_not_explain_a_standby_cost_that_did_not_show() -> None:
    assert "each also reads the other's table changelogs" in report.standby_sentence(1.24)
    cheaper = report.standby_sentence(0.95)
    assert "0.95×" in cheaper
    assert "no cost of the standby showed in this run" in cheaper
    assert "each also reads" not in cheaper
