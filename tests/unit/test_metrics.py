"""The worker's metrics: what one batch records, the batch histogram's exposition, bounded
labels. Metrics are process-wide, so every check compares before and after."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline import metrics
from pipeline.contract.deadletter import Source
from pipeline.contract.events import ClickEvent, PurchaseEvent, encode_envelope
from pipeline.domain.rows import CreditRow
from pipeline.metrics import REGISTRY, BatchHistogram
from pipeline.worker.ingest import IngestResult, ingest_message

SRC = Source("siyu.events", 0, 7, 0)
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def click(eid: str, brand: str = "m-acme", channel: str = "app") -> ClickEvent:
    return ClickEvent(
        type="click",
        event_id=eid,
        schema_version=1,
        brand_id=brand,
        user_id="u1",
        occurred_at=T0,
        channel=channel,
        kol_id="kol-1",
    )


def purchase(eid: str, brand: str = "m-acme", channel: str = "mini_program") -> PurchaseEvent:
    return PurchaseEvent(
        type="purchase",
        event_id=eid,
        schema_version=1,
        brand_id=brand,
        user_id="u1",
        occurred_at=T0,
        channel=channel,
        order_id=f"o-{eid}",
        amount=Decimal("9.90"),
        currency="CNY",
    )


def test_an_ingest_batch_counts_accepted_consumed_and_dead_letters_per_brand() -> None:
    before = {
        "acc_click": value("siyu_events_accepted_total", brand_id="m-ing", type="click"),
        "acc_purchase": value("siyu_events_accepted_total", brand_id="m-ing", type="purchase"),
        "con_bad": value("siyu_events_consumed_total", brand_id="m-ing", type=""),
        "con_unknown": value("siyu_events_consumed_total", brand_id="", type=""),
        "dl_schema": value("siyu_dead_letters_total", reason="schema_violation", brand_id="m-ing"),
        "dl_json": value("siyu_dead_letters_total", reason="invalid_json", brand_id=""),
        "messages": value("siyu_ingest_messages_total"),
        "batches": value("siyu_agent_batch_duration_seconds_count", agent="ingest"),
    }
    # Misses required fields.
    bad = {"event_id": "x", "type": "click", "schema_version": 1, "brand_id": "m-ing"}
    envelope = encode_envelope([click("a", "m-ing"), click("b", "m-ing"), purchase("c", "m-ing")])
    envelope = envelope[:-2] + b"," + orjson.dumps(bad) + b"]}"
    result = IngestResult()
    ingest_message(result, None, envelope, SRC)
    ingest_message(result, None, b"{not json", SRC)
    assert len(result.accepted) == 3 and len(result.dead_letters) == 2

    metrics.SENSOR.on_ingest(2, [ev for ev, _ in result.accepted], result.dead_letters, 0.01)

    assert value("siyu_events_accepted_total", brand_id="m-ing", type="click") == (
        before["acc_click"] + 2
    )
    assert value("siyu_events_accepted_total", brand_id="m-ing", type="purchase") == (
        before["acc_purchase"] + 1
    )
    # A rejected event counts as consumed, with its brand but without a (trusted) type.
    assert value("siyu_events_consumed_total", brand_id="m-ing", type="") == before["con_bad"] + 1
    assert value("siyu_events_consumed_total", brand_id="", type="") == before["con_unknown"] + 1
    assert value("siyu_dead_letters_total", reason="schema_violation", brand_id="m-ing") == (
        before["dl_schema"] + 1
    )
    assert value("siyu_dead_letters_total", reason="invalid_json", brand_id="") == (
        before["dl_json"] + 1
    )
    assert value("siyu_ingest_messages_total") == before["messages"] + 2
    assert value("siyu_agent_batch_duration_seconds_count", agent="ingest") == (
        before["batches"] + 1
    )


def _credit(brand: str, kind: str, sign: int, revision: int = 1) -> CreditRow:
    return CreditRow(
        brand_id=brand,
        purchase_event_id="p1",
        order_id="o1",
        buyer_id="u1",
        purchased_at_us=0,
        amount=Decimal("1"),
        currency="CNY",
        kind=kind,
        sharer_id=None,
        kol_id="kol-1" if kind != "organic" else None,
        share_id=None,
        share_depth=None,
        root_share_id=None,
        touch_event_id=None,
        touched_at_us=None,
        revision=revision,
        sign=sign,
    )


def test_a_user_batch_counts_conversions_duplicates_and_latency() -> None:
    b = "m-user"
    before = {
        "clicks": value("siyu_clicks_total", brand_id=b, channel="app"),
        "purchases": value("siyu_purchases_total", brand_id=b, channel="mini_program"),
        "dups": value("siyu_duplicate_events_total", brand_id=b, type="click"),
        "attributed": value("siyu_attributed_purchases_total", brand_id=b, kind="kol"),
        "retracted": value("siyu_attribution_retractions_total", brand_id=b, kind="kol"),
        "organic": value("siyu_attributed_purchases_total", brand_id=b, kind="organic"),
        "latency_count": value("siyu_event_processing_latency_seconds_count"),
        "latency_day": value("siyu_event_processing_latency_seconds_bucket", le="86400.0"),
        "latency_week": value("siyu_event_processing_latency_seconds_bucket", le="604800.0"),
    }
    now = (T0 + dt.timedelta(days=2, hours=1)).timestamp()  # every event is 2 days 1 h old
    applied = [click("c1", b), click("c2", b), purchase("p1", b)]
    duplicates = [click("c1", b)]  # seen before
    rows = [_credit(b, "kol", 1), _credit(b, "kol", -1), _credit(b, "kol", 1, 2)]
    rows.append(_credit(b, "organic", 1, 3))

    sensor = metrics.PrometheusSensor(clock=lambda: now)
    sensor.on_events_applied(applied, duplicates)
    sensor.on_state_batch("user", rows, [], 0.01)

    assert value("siyu_clicks_total", brand_id=b, channel="app") == before["clicks"] + 2
    assert value("siyu_purchases_total", brand_id=b, channel="mini_program") == (
        before["purchases"] + 1
    )
    assert value("siyu_duplicate_events_total", brand_id=b, type="click") == before["dups"] + 1
    assert value("siyu_attributed_purchases_total", brand_id=b, kind="kol") == (
        before["attributed"] + 2
    )
    assert value("siyu_attribution_retractions_total", brand_id=b, kind="kol") == (
        before["retracted"] + 1
    )
    assert (
        value("siyu_attributed_purchases_total", brand_id=b, kind="organic") == (before["organic"])
    )
    # Three events processed (the duplicate is not), each two days and an hour old.
    assert value("siyu_event_processing_latency_seconds_count") == before["latency_count"] + 3
    assert (
        value("siyu_event_processing_latency_seconds_bucket", le="86400.0")
        == (before["latency_day"])
    )
    assert value("siyu_event_processing_latency_seconds_bucket", le="604800.0") == (
        before["latency_week"] + 3
    )


def test_a_state_batch_counts_its_batch_time_per_processor_and_no_events() -> None:
    b = "m-share"
    before = value("siyu_duplicate_events_total", brand_id=b, type="click")
    batches = value("siyu_agent_batch_duration_seconds_count", agent="state-share")
    metrics.SENSOR.on_state_batch("share", [], [], 0.01)
    assert value("siyu_duplicate_events_total", brand_id=b, type="click") == before
    assert value("siyu_agent_batch_duration_seconds_count", agent="state-share") == batches + 1


def test_batch_histogram_exposes_cumulative_buckets_sum_and_count() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    hist = BatchHistogram("t_seconds", "test", (1.0, 5.0), ["table"], registry=registry)
    hist.observe_many([0.5, 1.0, 2.0, 10.0], ("a",))
    hist.observe(3.0, weight=4, labels=("a",))
    hist.observe_many([7.0], ("b",))
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in families[0].samples}

    def sample(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert sample("t_seconds_bucket", table="a", le="1.0") == 2  # 0.5 and 1.0 (le is <=)
    assert sample("t_seconds_bucket", table="a", le="5.0") == 7  # + 2.0 and 4 x 3.0
    assert sample("t_seconds_bucket", table="a", le="+Inf") == 8
    assert sample("t_seconds_count", table="a") == 8
    assert sample("t_seconds_sum", table="a") == pytest.approx(0.5 + 1 + 2 + 10 + 12)
    assert sample("t_seconds_count", table="b") == 1
    with pytest.raises(ValueError):
        hist.observe(1.0)  # labels missing


def test_labels_from_input_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(metrics.MAX_LABEL_VALUES, "channel", 3)
    monkeypatch.setitem(metrics._seen, "channel", set())
    got = [metrics.bounded("channel", f"c{i}") for i in range(6)]
    assert got == ["c0", "c1", "c2", "_other", "_other", "_other"]
    assert metrics.bounded("channel", "c1") == "c1"  # known values stay themselves


def test_sink_flush_records_rows_batch_sizes_and_visible_latency() -> None:
    import time

    before_rows = value("siyu_sink_rows_inserted_total", table="m_table")
    before_count = value("siyu_visible_latency_seconds_count", table="m_table")
    before_fast = value("siyu_visible_latency_seconds_bucket", table="m_table", le="1.0")
    now_ms = int(time.time() * 1000)
    # 30 rows published 200 ms ago, 10 rows published 20 s ago.
    metrics.record_flushed("m_table", 40, [(now_ms - 200, 30), (now_ms - 20_000, 10)])
    assert value("siyu_sink_rows_inserted_total", table="m_table") == before_rows + 40
    assert value("siyu_visible_latency_seconds_count", table="m_table") == before_count + 40
    assert value("siyu_visible_latency_seconds_bucket", table="m_table", le="1.0") == (
        before_fast + 30
    )
    assert value("siyu_sink_batch_rows_bucket", table="m_table", le="50.0") >= 1


def test_lag_of_skips_unknown_highwaters_and_counts_uncommitted_from_zero() -> None:
    ends = {"a": 10, "b": None, "c": 7}
    committed = {"a": 4}
    assert dict(metrics.lag_of(["a", "b", "c"], ends.get, committed.get)) == {"a": 6, "c": 7}


def test_the_app_serves_metrics(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pipeline.settings import load_settings
    from pipeline.worker.app import create_app

    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    app = create_app(load_settings())
    assert "/metrics" in app.web.views
    text = metrics.exposition().decode()
    assert "# TYPE siyu_events_accepted_total counter" in text
    assert "# TYPE siyu_event_processing_latency_seconds histogram" in text


def test_every_metric_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    names = [f.name for f in REGISTRY.collect() if f.name.startswith("siyu_")]
    assert len(names) > 10
    for family in REGISTRY.collect():
        if family.name.startswith("siyu_"):
            shown = family.name + ("_total" if family.type == "counter" else "")
            assert f"`{shown}`" in docs, f"docs/metrics.md does not list {shown}"
