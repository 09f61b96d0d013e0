"""The demo's pieces that need no server: pacing, namespaces, the children's environment and
the comparison of answers."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal

import pytest

from pipeline.demo.answers import DemoAnswers, KolRevenue, compute_answers
from pipeline.demo.brand import BrandParams, DemoBrand, generate
from pipeline.demo.children import child_env
from pipeline.demo.readback import compare_answers, format_comparison
from pipeline.demo.run import STEP_S, demo_database, demo_settings, paced_steps
from pipeline.errors import ConfigError
from pipeline.settings import Settings

SMALL = BrandParams(users=300, days=3, seed=11)


@pytest.fixture(scope="module")
def brand_answers() -> tuple[DemoBrand, DemoAnswers]:
    brand = generate(SMALL)
    return brand, compute_answers(brand.arrival)


def test_paced_steps_keep_the_order_and_cover_at_most_a_step_of_event_time(
    brand_answers: tuple[DemoBrand, DemoAnswers],
) -> None:
    brand, _ = brand_answers
    steps = paced_steps(brand.arrival)
    assert [e for step in steps for e in step] == brand.arrival
    assert len(steps) >= SMALL.days * 86_400 // STEP_S
    for step in steps:
        first = step[0].occurred_at
        assert all((e.occurred_at - first).total_seconds() < STEP_S for e in step)


def test_the_demo_namespace_is_its_own() -> None:
    base = Settings(clickhouse_url="clickhouse://u:p@ch:9000/acme?alt_hosts=ch2:9000")
    s = demo_settings(base, "r1")
    assert s.clickhouse_url == "clickhouse://u:p@ch:9000/acme_demo?alt_hosts=ch2:9000"
    assert s.app_id == "siyu-demo-r1"
    topics = [s.topic_events, s.topic_dead_letters, s.topic_rows, s.topic_by_user]
    assert all(t.startswith("siyu-demo-r1.") for t in topics)
    assert len({*topics, s.topic_by_share, s.topic_by_sharer}) == 6
    assert s.data_dir != base.data_dir
    with pytest.raises(ConfigError, match="one ClickHouse server"):
        demo_database(Settings(clickhouse_cluster="c1"))


def test_children_get_every_setting_in_their_environment() -> None:
    s = Settings(
        app_id="x", collector_keys={"a" * 64: "acme"}, topic_partitions=3, clickhouse_cluster=None
    )
    env = child_env(s)
    assert env["SIYU_APP_ID"] == "x"
    assert env["SIYU_TOPIC_PARTITIONS"] == "3"
    assert json.loads(env["SIYU_COLLECTOR_KEYS"]) == {"a" * 64: "acme"}
    assert "SIYU_CLICKHOUSE_CLUSTER" not in env
    # Read back by the settings themselves, they give the same settings.
    fields = {k.removeprefix("SIYU_").lower(): v for k, v in env.items() if k.startswith("SIYU_")}
    assert Settings(**fields) == s  # type: ignore[arg-type]


def test_equal_answers_agree(brand_answers: tuple[DemoBrand, DemoAnswers]) -> None:
    _, answers = brand_answers
    comparisons = compare_answers(answers, answers)
    assert all(c.agrees for c in comparisons)
    assert format_comparison(comparisons).splitlines()[-1].startswith("agree: all 9 answers")


def test_one_changed_amount_is_a_disagreement_that_names_the_row(
    brand_answers: tuple[DemoBrand, DemoAnswers],
) -> None:
    _, answers = brand_answers
    first = answers.top_kols[0]
    changed = first._replace(revenue=first.revenue + Decimal("0.01"))
    got = dataclasses.replace(answers, top_kols=[changed, *answers.top_kols[1:]])
    comparisons = compare_answers(got, answers)
    bad = [c for c in comparisons if not c.agrees]
    assert [c.field for c in bad] == ["top_kols"]
    assert bad[0].only_clickhouse == [changed] and bad[0].only_recomputed == [first]
    text = format_comparison(comparisons)
    assert "top KOLs by attributed revenue  DISAGREE" in text
    assert f"kol_id={first.kol_id}" in text
    assert text.splitlines()[-1].startswith("DISAGREE: 1 of 9 answers differ")


def test_the_same_rows_in_another_order_disagree(
    brand_answers: tuple[DemoBrand, DemoAnswers],
) -> None:
    _, answers = brand_answers
    assert len(answers.top_kols) > 1
    got = dataclasses.replace(answers, top_kols=list(reversed(answers.top_kols)))
    bad = [c for c in compare_answers(got, answers) if not c.agrees]
    assert [c.field for c in bad] == ["top_kols"]
    assert isinstance(bad[0].only_clickhouse[0], KolRevenue)
