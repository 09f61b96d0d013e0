"""The demo brand generator and the answers recomputed from its events."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import replace
from decimal import Decimal
from itertools import pairwise

import pytest

from pipeline.contract.events import (
    MAX_EVENTS_PER_ENVELOPE,
    AnyEvent,
    ClickEvent,
    PurchaseEvent,
    RejectReason,
    ShareEvent,
    decode_message,
    encode_envelope,
    encode_event,
)
from pipeline.demo.answers import (
    ChannelConversion,
    CreditMix,
    DemoAnswers,
    KocStanding,
    KolRevenue,
    ReasonCount,
    TierCount,
    answers_from,
    compute_answers,
    dead_letters_by_reason,
    format_answers,
    run_domain,
    unique_in_time_order,
)
from pipeline.demo.brand import (
    PEAK_HOUR,
    TROUGH_HOUR,
    BrandParams,
    DemoBrand,
    generate,
    local_hour,
)
from pipeline.domain import CreditRow, Engine

Event = AnyEvent
SMALL = BrandParams(users=1500, kols=20, days=21, malformed_rate=0.01)


@pytest.fixture(scope="module")
def brand() -> DemoBrand:
    """The default demo brand (what ``make demo`` sends)."""
    return generate()


@pytest.fixture(scope="module")
def engine(brand: DemoBrand) -> Engine:
    return run_domain(brand.events)


@pytest.fixture(scope="module")
def answers(brand: DemoBrand, engine: Engine) -> DemoAnswers:
    return answers_from(
        engine, brand.events, dead_letters_by_reason(m.payload for m in brand.malformed)
    )


def encoded(events: list[Event]) -> list[bytes]:
    return [encode_event(e) for e in events]


# -- the generator ---------------------------------------------------------------


def test_same_seed_gives_the_same_events_ids_arrival_and_malformed_inputs() -> None:
    a, b = generate(SMALL), generate(SMALL)
    assert encoded(a.events) == encoded(b.events)
    assert encoded(a.arrival) == encoded(b.arrival)
    assert [(m.payload, m.reason) for m in a.malformed] == [
        (m.payload, m.reason) for m in b.malformed
    ]


def test_a_different_seed_gives_different_events() -> None:
    a, b = generate(SMALL), generate(replace(SMALL, seed=SMALL.seed + 1))
    assert encoded(a.events) != encoded(b.events)
    assert not {e.event_id for e in a.events} & {e.event_id for e in b.events}


def test_duplicates_and_malformed_inputs_do_not_change_the_events() -> None:
    plain = generate(replace(SMALL, duplicate_rate=0.0, malformed_rate=0.0, max_delay_s=0))
    noisy = generate(replace(SMALL, duplicate_rate=0.05, malformed_rate=0.02))
    assert encoded(plain.events) == encoded(noisy.events)
    assert plain.arrival == plain.events and plain.malformed == []
    assert len(noisy.arrival) == len(noisy.events) + round(0.05 * len(noisy.events))


def test_default_size_is_a_few_tens_of_thousands_of_whole_second_events_in_order(
    brand: DemoBrand,
) -> None:
    events = brand.events
    assert 20_000 <= len(events) <= 60_000
    assert all(e.occurred_at.microsecond == 0 for e in events)
    assert all(a.occurred_at <= b.occurred_at for a, b in pairwise(events))
    assert len({e.event_id for e in events}) == len(events)
    assert len({e.order_id for e in events if isinstance(e, PurchaseEvent)}) == sum(
        isinstance(e, PurchaseEvent) for e in events
    )
    start, end = brand.params.start, brand.params.start + dt.timedelta(days=brand.params.days)
    assert all(start <= e.occurred_at < end for e in events)
    assert {e.brand_id for e in events} == {brand.params.brand_id}


def test_arrival_is_out_of_order_with_duplicates_but_within_the_allowed_lateness(
    brand: DemoBrand,
) -> None:
    arrival = brand.arrival
    assert Counter(e.event_id for e in arrival) - Counter(e.event_id for e in brand.events)
    assert {e.event_id for e in arrival} == {e.event_id for e in brand.events}
    newest = arrival[0].occurred_at
    behind = dt.timedelta(0)
    for event in arrival:
        newest = max(newest, event.occurred_at)
        behind = max(behind, newest - event.occurred_at)
    assert dt.timedelta(0) < behind <= dt.timedelta(seconds=brand.params.max_delay_s)


def test_kol_reach_is_heavy_tailed(brand: DemoBrand) -> None:
    clicks = Counter(e.kol_id for e in brand.events if isinstance(e, ClickEvent) and e.kol_id)
    per_kol = sorted((clicks[k.kol_id] for k in brand.kols), reverse=True)
    top = round(0.2 * len(brand.kols))
    assert sum(per_kol[:top]) >= 0.6 * sum(per_kol)


def test_kol_reach_evens_out_with_a_light_tail() -> None:
    # The tail comes from the Pareto shape, not from how visits are drawn.
    light = generate(replace(SMALL, kol_reach_alpha=8.0))
    clicks = Counter(e.kol_id for e in light.events if isinstance(e, ClickEvent) and e.kol_id)
    per_kol = sorted(clicks.values(), reverse=True)
    assert sum(per_kol[: round(0.2 * len(light.kols))]) < 0.4 * sum(per_kol)


def test_users_arrive_from_kol_posts(brand: DemoBrand) -> None:
    first: dict[str, Event] = {}
    for e in brand.events:
        first.setdefault(e.user_id, e)
    from_kol = [e for e in first.values() if e.channel == "kol_post"]
    assert len(from_kol) > len(first) / 3
    assert all(isinstance(e, ClickEvent) and e.kol_id and e.campaign_id for e in from_kol)


def test_shares_cascade_in_chains_of_depth_two_or_more(brand: DemoBrand, engine: Engine) -> None:
    shared_at = {e.share_id: e.occurred_at for e in brand.events if isinstance(e, ShareEvent)}
    for e in brand.events:
        # Every share link points at a share made before it.
        if isinstance(e, ShareEvent) and e.parent_share_id is not None:
            assert shared_at[e.parent_share_id] < e.occurred_at
        elif isinstance(e, ClickEvent | PurchaseEvent) and e.share_id is not None:
            assert shared_at[e.share_id] < e.occurred_at
    chains = engine.share_chains().values()
    assert all(c.resolved for c in chains)
    depths = Counter(c.depth for c in chains)
    assert depths[0] > depths[1] > depths[2] > 0  # re-shares decay with depth
    assert any(c.root_kol_id for c in chains if c.depth and c.depth >= 2)


def test_a_few_sharers_become_kocs(brand: DemoBrand, answers: DemoAnswers) -> None:
    sharers = {e.user_id for e in brand.events if isinstance(e, ShareEvent)}
    buyers = {e.user_id for e in brand.events if isinstance(e, PurchaseEvent)}
    kocs = {k.user_id for k in answers.kocs}
    assert kocs and kocs < sharers
    assert len(kocs) < 0.1 * len(buyers)
    assert all(k.buyers >= 2 for k in answers.kocs)  # koc_min_buyers


def test_repeat_purchasers_exist(brand: DemoBrand, answers: DemoAnswers) -> None:
    orders = Counter(e.user_id for e in brand.events if isinstance(e, PurchaseEvent))
    assert sum(n >= 2 for n in orders.values()) > 0.1 * len(orders)
    assert max(orders.values()) >= 5
    tiers = dict(answers.tiers)
    assert tiers["repeat"] > 0 and tiers["loyal"] > 0


def test_evening_peak_beats_the_night_trough_in_local_time(brand: DemoBrand) -> None:
    hours = Counter(local_hour(int(e.occurred_at.timestamp())) for e in brand.events)
    assert (PEAK_HOUR, TROUGH_HOUR) == (21, 4)
    assert hours[PEAK_HOUR] > 5 * hours[TROUGH_HOUR]
    assert max(hours, key=hours.__getitem__) in (20, 21, 22)


def test_every_event_survives_the_contract_round_trip(brand: DemoBrand) -> None:
    back: list[Event] = []
    for i in range(0, len(brand.events), MAX_EVENTS_PER_ENVELOPE):
        decoded = decode_message(encode_envelope(brand.events[i : i + MAX_EVENTS_PER_ENVELOPE]))
        assert decoded.rejects == []
        back += decoded.events
    assert back == brand.events


def test_malformed_inputs_are_rejected_with_exactly_the_expected_reasons() -> None:
    malformed = generate(SMALL).malformed
    assert {m.reason for m in malformed} == {
        RejectReason.INVALID_JSON,
        RejectReason.NOT_AN_OBJECT,
        RejectReason.UNKNOWN_TYPE,
        RejectReason.UNSUPPORTED_SCHEMA_VERSION,
        RejectReason.SCHEMA_VIOLATION,
    }
    for m in malformed:
        decoded = decode_message(m.payload)
        assert decoded.events == [], m.what
        assert [r.reason for r in decoded.rejects] == [m.reason], m.what


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="max_delay_s"):
        BrandParams(max_delay_s=86_400)
    with pytest.raises(ValueError, match=r"users.*kols"):
        BrandParams(users=3, kols=0)


# -- the answers -----------------------------------------------------------------

CST = dt.timezone(dt.timedelta(hours=8))
COMMON = {"schema_version": 1, "brand_id": "acme"}


def at(day: int, hh: int, mm: int) -> dt.datetime:
    return dt.datetime(2026, 11, day, hh, mm, tzinfo=CST)


# The worked example of docs/domain.md, plus D (KOL k2, then a repeat purchase in the
# app, sent twice) and E (organic).
EXAMPLE: list[Event] = [
    ClickEvent(event_id="e1", type="click", user_id="A", occurred_at=at(2, 10, 0),
               channel="kol_post", kol_id="k1", **COMMON),
    ShareEvent(event_id="e2", type="share", user_id="A", occurred_at=at(2, 10, 5),
               channel="wechat_group", share_id="s1", kol_id="k1", **COMMON),
    ClickEvent(event_id="e3", type="click", user_id="B", occurred_at=at(2, 11, 0),
               channel="wechat_group", share_id="s1", **COMMON),
    ShareEvent(event_id="e4", type="share", user_id="B", occurred_at=at(2, 11, 30),
               channel="wechat_group", share_id="s2", parent_share_id="s1", **COMMON),
    ClickEvent(event_id="e5", type="click", user_id="C", occurred_at=at(2, 12, 0),
               channel="wechat_group", share_id="s2", **COMMON),
    PurchaseEvent(event_id="e6", type="purchase", user_id="C", occurred_at=at(2, 12, 30),
                  channel="mini_program", order_id="o1", amount=Decimal("199.00"),
                  currency="CNY", **COMMON),
    PurchaseEvent(event_id="e7", type="purchase", user_id="B", occurred_at=at(2, 13, 0),
                  channel="mini_program", order_id="o2", amount=Decimal("99.00"),
                  currency="CNY", share_id="s2", **COMMON),
    PurchaseEvent(event_id="e8", type="purchase", user_id="A", occurred_at=at(2, 14, 0),
                  channel="mini_program", order_id="o3", amount=Decimal("59.00"),
                  currency="CNY", share_id="s2", **COMMON),
    ClickEvent(event_id="e9", type="click", user_id="D", occurred_at=at(2, 20, 0),
               channel="kol_post", kol_id="k2", **COMMON),
    PurchaseEvent(event_id="e10", type="purchase", user_id="D", occurred_at=at(2, 20, 10),
                  channel="kol_post", order_id="o4", amount=Decimal("129.00"),
                  currency="CNY", **COMMON),
    PurchaseEvent(event_id="e11", type="purchase", user_id="D", occurred_at=at(5, 21, 0),
                  channel="app", order_id="o5", amount=Decimal("50.50"),
                  currency="CNY", **COMMON),
    PurchaseEvent(event_id="e12", type="purchase", user_id="E", occurred_at=at(3, 9, 0),
                  channel="app", order_id="o6", amount=Decimal("30.00"),
                  currency="CNY", **COMMON),
]  # fmt: skip
BAD = [b'{"event_id": "x', b'{"type": "refund"}', b"[]"]


def test_answers_of_a_worked_example() -> None:
    sent = [*reversed(EXAMPLE), EXAMPLE[10]]  # any order, a duplicate
    got = compute_answers(sent, BAD)
    assert got.brand_id == "acme"
    assert got.events_by_type == [("click", 4), ("purchase", 6), ("share", 2)]
    # k1: o1, o2, o3 through its chain s1 -> s2; k2: D's o4 and, within 7 days of
    # D's click, the repeat o5.
    assert got.top_kols == [
        ("k1", 1, 3, 3, Decimal("357.00")),
        ("k2", 1, 2, 0, Decimal("179.50")),
    ]
    # B's shares brought A (o3) and C (o1): promoted at o3, 14:00.
    assert got.kocs == [("B", at(2, 14, 0), 2, 2, Decimal("258.00"))]
    assert got.tiers == [
        ("visitor", 0), ("customer", 3), ("repeat", 1), ("loyal", 0), ("advocate", 1)
    ]  # fmt: skip
    assert got.conversion == [
        ("app", 0, 2), ("kol_post", 2, 1), ("mini_program", 0, 3), ("wechat_group", 2, 0)
    ]  # fmt: skip
    assert got.credit_mix == [
        ("kol", 2, Decimal("179.50")),
        ("organic", 1, Decimal("30.00")),
        ("referral", 3, Decimal("357.00")),
    ]
    assert got.dead_letters == [("invalid_json", 1), ("not_an_object", 1), ("unknown_type", 1)]
    # Named tuples, comparable with plain rows read back from ClickHouse.
    assert isinstance(got.top_kols[0], KolRevenue) and isinstance(got.kocs[0], KocStanding)
    assert isinstance(got.tiers[0], TierCount) and isinstance(got.conversion[0], ChannelConversion)
    assert isinstance(got.credit_mix[0], CreditMix) and isinstance(got.dead_letters[0], ReasonCount)


def test_answers_refuse_mixed_brands_and_currencies() -> None:
    other_brand = EXAMPLE[0].model_copy(update={"brand_id": "other", "event_id": "x1"})
    with pytest.raises(ValueError, match="one brand"):
        compute_answers([*EXAMPLE, other_brand])
    usd = EXAMPLE[5].model_copy(update={"currency": "USD", "event_id": "x2"})
    with pytest.raises(ValueError, match="USD"):
        compute_answers([*EXAMPLE, usd])


def test_kol_revenue_sums_equal_the_engines_signed_credit_rows(
    brand: DemoBrand, engine: Engine, answers: DemoAnswers
) -> None:
    credits = [r for r in engine.rows if isinstance(r, CreditRow)]
    assert sum(k.revenue for k in answers.top_kols) == sum(
        r.amount * r.sign for r in credits if r.kol_id is not None
    )
    assert sum(k.orders for k in answers.top_kols) == sum(
        r.sign for r in credits if r.kol_id is not None
    )
    # Every purchase has exactly one net credit, and the mix adds up to all revenue.
    purchases = [e for e in brand.events if isinstance(e, PurchaseEvent)]
    assert sum(m.orders for m in answers.credit_mix) == len(purchases)
    assert sum(m.revenue for m in answers.credit_mix) == sum(e.amount for e in purchases)


def test_answers_are_the_same_when_fed_in_arrival_order_with_duplicates() -> None:
    # What the workers see: late, out of order, duplicated, in envelopes.
    small = generate(SMALL)
    streamed = Engine()
    streamed.feed(small.arrival, batch_size=500)
    streamed.finish()
    dead = dead_letters_by_reason(m.payload for m in small.malformed)
    from_stream = answers_from(streamed, unique_in_time_order(small.arrival), dead)
    assert from_stream == compute_answers(small.events, [m.payload for m in small.malformed])
    assert from_stream.kocs and from_stream.dead_letters


def test_format_answers_shows_every_section(answers: DemoAnswers) -> None:
    text = format_answers(answers, top=5)
    for title in ("Top 5 of", "KOC leaderboard", "Loyalty tiers", "Conversion by channel",
                  "Dead letters by reason"):  # fmt: skip
        assert title in text
    top = answers.top_kols[0]
    assert f"{top.revenue:,.2f}" in text and top.kol_id in text
    assert answers.top_kols[5].kol_id not in text.split("KOC leaderboard")[0]
