"""tests/bench/report.py: what the benchmark's table says of its figures."""

from __future__ import annotations

from tests.bench import report


def test_the_scaling_report_does_not_explain_a_standby_cost_that_did_not_show() -> None:
    assert "each also reads the other's table changelogs" in report.standby_sentence(1.24)
    cheaper = report.standby_sentence(0.95)
    assert "0.95×" in cheaper
    assert "no cost of the standby showed in this run" in cheaper
    assert "each also reads" not in cheaper


def _results(ceiling: float, domain_own: float | None) -> dict[str, object]:
    run = {"ceiling_events_per_s": ceiling, "siyu_events_per_s": ceiling / 40}
    domain: dict[str, object] = {"events": 500, "events_per_cpu_s": 99_999.0}
    if domain_own is not None:
        domain["throughput_events"] = {
            "events": 300,
            "events_per_cpu_s": domain_own,
            "cpu_us_per_event": 1e6 / domain_own,
        }
    return {"throughput": report.summarise([run]), "domain": domain}


def test_the_domain_bound_is_the_domain_rate_on_the_throughput_events_over_the_ceiling() -> None:
    assert report.domain_bound(_results(200_000.0, 44_000.0)) == 44_000.0 / 200_000.0
    assert report.domain_bound(_results(200_000.0, None)) is None
    assert report.domain_bound({"domain": {"throughput_events": {"events_per_cpu_s": 1.0}}}) is None


def test_a_bound_below_the_target_says_no_worker_can_reach_it() -> None:
    below = report.bound_sentence(0.22)
    assert "no worker running this domain core can reach 30% of the ceiling" in below
    assert "at most 22.0%" in below
    above = report.bound_sentence(0.45)
    assert "no worker" not in above
    assert "rules out only ratios above 45.0%" in above
