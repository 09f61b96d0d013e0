"""KOC promotion: N distinct other buyers referred within D, emitted with its evidence."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.domain import (
    DomainConfig,
    KocPromotionRow,
    KocStatusChanged,
    LoyaltyRow,
    Referral,
    first_koc_promotion,
)
from tests.unit.domain.builders import DAY, Event, Events, run, us

D = 30 * DAY


def referral(pid: str, buyer: str, t: int, *, active: bool = True) -> Referral:
    return Referral(pid, f"o-{pid}", buyer, us(t), 1, active)


def promotions(engine_rows: Sequence[object]) -> list[tuple[int, tuple[str, ...], int]]:
    return [
        (r.promoted_at_us, r.buyer_ids, r.sign)
        for r in engine_rows
        if isinstance(r, KocPromotionRow)
    ]


def test_koc_is_reached_by_the_nth_distinct_buyer() -> None:
    config = DomainConfig(koc_min_buyers=3)
    refs = [referral("p1", "b1", 0), referral("p2", "b2", 10)]
    assert first_koc_promotion(refs, config) is None
    promo = first_koc_promotion([*refs, referral("p3", "b3", 20)], config)
    assert promo is not None
    assert (promo.promoted_at_us, promo.promoting_purchase_event_id) == (us(20), "p3")
    assert promo.buyer_ids == ("b1", "b2", "b3")


def test_a_buyer_counts_once_however_many_orders_they_place() -> None:
    config = DomainConfig()
    refs = [referral(f"p{i}", "b1", i) for i in range(5)]
    assert first_koc_promotion(refs, config) is None
    promo = first_koc_promotion([*refs, referral("q", "b2", 100)], config)
    assert promo is not None
    # The evidence lists every referred order in the window, each buyer once in buyer_ids.
    assert [e.purchase_event_id for e in promo.evidence] == ["p0", "p1", "p2", "p3", "p4", "q"]
    assert promo.buyer_ids == ("b1", "b2")


def test_buyers_exactly_d_apart_promote_and_one_second_more_does_not() -> None:
    config = DomainConfig()
    assert first_koc_promotion([referral("p1", "b1", 0), referral("p2", "b2", D)], config)
    assert not first_koc_promotion([referral("p1", "b1", 0), referral("p2", "b2", D + 1)], config)


def test_retracted_referrals_do_not_count() -> None:
    refs = [referral("p1", "b1", 0), referral("p2", "b2", 5, active=False)]
    assert first_koc_promotion(refs, DomainConfig()) is None


def test_promotion_is_emitted_once_with_its_evidence_when_it_first_holds() -> None:
    ev = Events()
    engine = run(
        [
            ev.share("alice", 0, "s1"),
            ev.click("bob", 10, share="s1"),
            ev.purchase("bob", 20, "o1", event_id="p1"),
            ev.purchase("bob", 25, "o2", event_id="p2"),
            ev.click("carol", 30, share="s1"),
            ev.purchase("carol", 40, "o3", event_id="p3"),
            ev.click("dave", 50, share="s1"),
            ev.purchase("dave", 60, "o4", event_id="p4"),
        ],
        batch_size=1,
    )
    rows = [r for r in engine.rows if isinstance(r, KocPromotionRow)]
    assert len(rows) == 1
    row = rows[0]
    assert (row.sharer_id, row.promoted_at_us, row.promoting_purchase_event_id, row.sign) == (
        "alice", us(40), "p3", 1,
    )  # fmt: skip
    assert row.buyer_ids == ("bob", "carol")
    assert row.evidence_order_ids == ("o1", "o2", "o3")
    assert row.evidence_buyer_ids == ("bob", "bob", "carol")
    loyalty = engine.loyalty()[("brand", "alice")]
    assert (loyalty.tier, loyalty.is_koc, loyalty.koc_since_us) == ("advocate", True, us(40))
    sharer = engine.sharers()[("brand", "alice")]
    assert (sharer.referred_orders, sharer.last_referred_purchase_us) == (4, us(60))


def test_self_referrals_never_count_towards_koc() -> None:
    ev = Events()
    engine = run(
        [
            ev.share("alice", 0, "s1"),
            ev.purchase("alice", 10, "o1", share="s1"),
            ev.click("bob", 10, share="s1"),
            ev.purchase("bob", 20, "o2"),
        ]
    )
    assert engine.net_promotions() == {}
    assert engine.sharers()[("brand", "alice")].referred_orders == 1


def test_a_late_touch_that_moves_credit_away_retracts_the_promotion() -> None:
    ev = Events()
    first: list[Event] = [
        ev.share("alice", 0, "s1"),
        ev.click("bob", 10, share="s1"),
        ev.purchase("bob", 20, "o1"),
        ev.click("carol", 30, share="s1"),
        ev.purchase("carol", 100, "o2"),
    ]
    # Arrives last, but happened before carol's purchase: carol's credit moves to k9.
    late = ev.click("carol", 90, kol="k9")
    engine = run([*first, late], batch_size=1)
    assert promotions(engine.rows) == [
        (us(100), ("bob", "carol"), 1),
        (us(100), ("bob", "carol"), -1),
    ]
    assert engine.net_promotions() == {}
    loyalty = engine.loyalty()[("brand", "alice")]
    assert (loyalty.tier, loyalty.is_koc) == ("visitor", False)
    versions = [r.is_koc for r in engine.rows if isinstance(r, LoyaltyRow) and r.user_id == "alice"]
    assert versions[-2:] == [True, False]


def test_a_late_referral_moves_the_promotion_earlier() -> None:
    ev = Events()
    events: list[Event] = [
        ev.share("alice", 0, "s1"),
        ev.click("bob", 10, share="s1"),
        ev.purchase("bob", 20, "o1"),
        ev.click("carol", 30, share="s1"),
        ev.purchase("carol", 100, "o2"),
        ev.click("dave", 40, share="s1"),
        ev.purchase("dave", 50, "o3"),
    ]
    engine = run([*events[:5], *events[5:]], batch_size=1)
    assert promotions(engine.rows) == [
        (us(100), ("bob", "carol"), 1),
        (us(100), ("bob", "carol"), -1),
        (us(50), ("bob", "dave"), 1),
    ]
    statuses = [
        m.koc_since_us
        for m in (r for r in engine.rows if isinstance(r, LoyaltyRow) and r.user_id == "alice")
    ]
    assert statuses[-1] == us(50)


def test_koc_status_messages_carry_increasing_revisions() -> None:
    status = KocStatusChanged("brand", "alice", 2, us(5))
    assert status.to_dict() == {
        "type": "koc_status_changed", "brand_id": "brand", "user_id": "alice", "revision": 2,
        "koc_since_us": us(5),
    }  # fmt: skip
