"""Per-user loyalty: lifetime counters, first/last times, acquisition, tiers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.domain import DomainConfig, LoyaltyTier, TierRule, loyalty_tier
from tests.unit.domain.builders import DAY, Event, Events, run, us


def test_lifetime_counts_and_amounts_per_currency_are_exact() -> None:
    ev = Events()
    engine = run(
        [
            ev.click("bob", 0),
            ev.share("bob", 1, "s1"),
            ev.purchase("bob", 2, "o1", "0.1"),
            ev.purchase("bob", 3, "o2", "0.2"),
            ev.purchase("bob", 4, "o3", "19.99", currency="USD"),
        ]
    )
    row = engine.loyalty()[("brand", "bob")]
    assert (row.clicks, row.shares, row.orders) == (1, 1, 3)
    assert row.amount_currencies == ("CNY", "USD")
    assert row.amount_totals == (Decimal("0.3"), Decimal("19.99"))


def test_first_last_seen_first_second_last_purchase_in_event_time_whatever_the_order() -> None:
    ev = Events()
    events: list[Event] = [
        ev.purchase("bob", 50, "o2"),
        ev.click("bob", 0),
        ev.purchase("bob", 90, "o3"),
        ev.purchase("bob", 10, "o1"),
        ev.click("bob", 100),
    ]
    row = run(events, batch_size=1).loyalty()[("brand", "bob")]
    assert (row.first_seen_us, row.last_seen_us) == (us(0), us(100))
    assert (row.first_purchase_us, row.second_purchase_us, row.last_purchase_us) == (
        us(10), us(50), us(90),
    )  # fmt: skip
    assert row.repurchased


def test_a_single_purchase_is_not_a_repurchase() -> None:
    ev = Events()
    row = run([ev.purchase("bob", 10, "o1")]).loyalty()[("brand", "bob")]
    assert (row.repurchased, row.second_purchase_us, row.tier) == (False, None, "customer")


def test_acquisition_is_the_first_touch_kol_or_referrer() -> None:
    ev = Events()
    engine = run(
        [
            ev.click("bob", 100, kol="k1"),
            ev.share("alice", 0, "s1"),
            ev.click("bob", 50, share="s1"),
            ev.click("carol", 10, kol="k2"),
            ev.click("carol", 20, share="s1"),
            ev.click("alice", 5, share="s1"),  # self-referral: not a touch
            ev.click("dave", 5),  # no touch at all
        ],
        batch_size=1,
    )
    loyalty = engine.loyalty()
    bob, carol = loyalty[("brand", "bob")], loyalty[("brand", "carol")]
    assert (bob.acquisition_kind, bob.acquisition_referrer_id, bob.acquired_at_us) == (
        "referral", "alice", us(50),
    )  # fmt: skip
    assert (carol.acquisition_kind, carol.acquisition_kol_id) == ("kol", "k2")
    assert loyalty[("brand", "alice")].acquisition_kind is None
    assert loyalty[("brand", "dave")].acquisition_kind is None


def test_acquisition_survives_history_being_dropped() -> None:
    ev = Events()
    engine = run([ev.click("bob", 0, kol="k1"), ev.click("bob", 100 * DAY)], batch_size=1)
    row = engine.loyalty()[("brand", "bob")]
    assert (row.acquisition_kol_id, row.acquired_at_us, row.clicks) == ("k1", us(0), 2)


@pytest.mark.parametrize(
    ("orders", "amounts", "is_koc", "tier"),
    [
        (0, {}, False, LoyaltyTier.VISITOR),
        (1, {"CNY": Decimal(1)}, False, LoyaltyTier.CUSTOMER),
        (2, {"CNY": Decimal(1)}, False, LoyaltyTier.REPEAT),
        (4, {"CNY": Decimal(1)}, False, LoyaltyTier.REPEAT),
        (5, {"CNY": Decimal(1)}, False, LoyaltyTier.LOYAL),
        (1, {"CNY": Decimal("4999.9999")}, False, LoyaltyTier.CUSTOMER),
        (1, {"CNY": Decimal(5000)}, False, LoyaltyTier.LOYAL),
        (1, {"USD": Decimal(5000)}, False, LoyaltyTier.CUSTOMER),
        (0, {}, True, LoyaltyTier.ADVOCATE),
    ],
)
def test_default_tier_thresholds(
    orders: int, amounts: dict[str, Decimal], is_koc: bool, tier: LoyaltyTier
) -> None:
    assert loyalty_tier(orders, amounts, is_koc, TierRule()) is tier


def test_tier_thresholds_are_configurable() -> None:
    rule = TierRule(
        repeat_min_orders=3, loyal_min_orders=10, loyal_min_amounts=(("USD", Decimal(100)),)
    )
    assert loyalty_tier(2, {}, False, rule) is LoyaltyTier.CUSTOMER
    assert loyalty_tier(1, {"USD": Decimal(100)}, False, rule) is LoyaltyTier.LOYAL
    ev = Events()
    config = DomainConfig(tiers=rule)
    row = run([ev.purchase("bob", 0, "o1", "100", currency="USD")], config).loyalty()
    assert row[("brand", "bob")].tier == "loyal"


def test_inconsistent_tier_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="tier thresholds"):
        TierRule(repeat_min_orders=6, loyal_min_orders=5)


def test_a_duplicate_event_is_counted_once_even_after_other_events() -> None:
    ev = Events()
    click = ev.click("bob", 0, kol="k1")
    events: list[Event] = [click, ev.click("bob", 5), click, ev.purchase("bob", 9, "o1"), click]
    engine = run(events, batch_size=1)
    assert engine.loyalty()[("brand", "bob")].clicks == 2


def test_snapshot_versions_increase_by_one_per_change() -> None:
    ev = Events()
    engine = run([ev.click("bob", i) for i in range(5)], batch_size=1)
    from pipeline.domain import LoyaltyRow

    versions = [r.version for r in engine.rows if isinstance(r, LoyaltyRow)]
    assert versions == [1, 2, 3, 4, 5]
