"""Attribution: the latest touch at or before the purchase within the window."""

from __future__ import annotations

from decimal import Decimal

from pipeline.domain import (
    ORGANIC,
    CreditKind,
    CreditRow,
    DomainConfig,
    Purchase,
    Touch,
    TouchKind,
    attribute_purchase,
)
from tests.unit.domain.builders import DAY, WEEK, Event, Events, credit_of, run, us

CONFIG = DomainConfig()


def kol_touch(event_id: str, t: int, kol: str = "k1") -> Touch:
    return Touch(event_id, us(t), TouchKind.KOL, kol_id=kol)


def referral_touch(event_id: str, t: int, sharer: str, kol: str | None = None) -> Touch:
    return Touch(event_id, us(t), TouchKind.REFERRAL, kol_id=kol, share_id="s", sharer_id=sharer)


# -- the rule as a pure function ---------------------------------------------


def test_touch_exactly_at_the_window_end_takes_credit() -> None:
    credit = attribute_purchase([kol_touch("c", 0)], Purchase("p", "buyer", us(WEEK)), CONFIG)
    assert credit.kind is CreditKind.KOL and credit.touch_event_id == "c"


def test_touch_one_second_older_than_the_window_does_not_count() -> None:
    credit = attribute_purchase([kol_touch("c", 0)], Purchase("p", "buyer", us(WEEK + 1)), CONFIG)
    assert credit == ORGANIC


def test_touch_one_second_after_the_purchase_does_not_count() -> None:
    credit = attribute_purchase([kol_touch("c", 101)], Purchase("p", "buyer", us(100)), CONFIG)
    assert credit == ORGANIC


def test_touch_in_the_same_second_as_the_purchase_counts() -> None:
    credit = attribute_purchase([kol_touch("c", 100)], Purchase("p", "buyer", us(100)), CONFIG)
    assert credit.touch_event_id == "c"


def test_latest_touch_wins() -> None:
    touches = [kol_touch("c1", 0), referral_touch("c2", 10, "alice", "k9"), kol_touch("c3", 5)]
    credit = attribute_purchase(touches, Purchase("p", "buyer", us(20)), CONFIG)
    assert (credit.kind, credit.sharer_id, credit.kol_id) == (CreditKind.REFERRAL, "alice", "k9")


def test_touches_in_the_same_second_are_ordered_by_event_id() -> None:
    touches = [kol_touch("c2", 10, "k2"), kol_touch("c1", 10, "k1")]
    credit = attribute_purchase(touches, Purchase("p", "buyer", us(20)), CONFIG)
    assert credit.kol_id == "k2"


def test_self_referral_never_counts_and_an_older_touch_takes_credit() -> None:
    touches = [kol_touch("c1", 0), referral_touch("c2", 10, "buyer")]
    credit = attribute_purchase(touches, Purchase("p", "buyer", us(20)), CONFIG)
    assert credit.touch_event_id == "c1"


def test_the_purchases_own_share_link_beats_a_click_in_the_same_second() -> None:
    touches = [kol_touch("zz-click", 20), referral_touch("p", 20, "alice")]
    credit = attribute_purchase(touches, Purchase("p", "buyer", us(20)), CONFIG)
    assert credit.sharer_id == "alice"


def test_window_is_configurable() -> None:
    config = DomainConfig(attribution_window_s=DAY)
    touches = [kol_touch("c", 0)]
    assert attribute_purchase(touches, Purchase("p", "b", us(DAY)), config).touch_event_id == "c"
    assert attribute_purchase(touches, Purchase("p", "b", us(DAY + 1)), config) == ORGANIC


# -- end to end through the processors --------------------------------------


def test_referral_touch_credits_the_sharer_and_the_chains_kol() -> None:
    ev = Events()
    engine = run(
        [
            ev.share("alice", 0, "s1", kol="k1"),
            ev.click("bob", 10, share="s1"),
            ev.purchase("bob", 20, "o1", event_id="p1"),
        ]
    )
    assert credit_of(engine, "p1") == {
        "kind": "referral", "sharer_id": "alice", "kol_id": "k1", "share_id": "s1",
        "touch_event_id": "e002", "share_depth": 0,
    }  # fmt: skip


def test_kol_touch_credits_that_kol() -> None:
    ev = Events()
    engine = run([ev.click("bob", 0, kol="k7"), ev.purchase("bob", 20, "o1", event_id="p1")])
    assert credit_of(engine, "p1")["kind"] == "kol"
    assert credit_of(engine, "p1")["kol_id"] == "k7"


def test_purchase_without_touch_is_organic() -> None:
    ev = Events()
    engine = run([ev.click("bob", 0), ev.purchase("bob", 20, "o1", event_id="p1")])
    assert credit_of(engine, "p1")["kind"] == "organic"


def test_touch_one_second_after_the_purchase_is_not_credited_end_to_end() -> None:
    ev = Events()
    purchase = ev.purchase("bob", 100, "o1", event_id="p1")
    click = ev.click("bob", 101, kol="k1")
    orders: list[list[Event]] = [[purchase, click], [click, purchase]]
    for order in orders:
        assert credit_of(run(order, batch_size=1), "p1")["kind"] == "organic"


def test_touch_exactly_at_the_window_end_is_credited_end_to_end() -> None:
    ev = Events()
    engine = run([ev.click("bob", 0, kol="k1"), ev.purchase("bob", WEEK, "o1", event_id="p1")])
    assert credit_of(engine, "p1")["kol_id"] == "k1"


def test_a_purchase_through_a_share_link_is_a_touch_at_purchase_time() -> None:
    ev = Events()
    engine = run(
        [
            ev.click("bob", 0, kol="k1"),
            ev.share("alice", 5, "s1"),
            ev.purchase("bob", 20, "o1", share="s1", event_id="p1"),
            # ... and for later purchases within the window.
            ev.purchase("bob", 20 + WEEK, "o2", event_id="p2"),
            ev.purchase("bob", 21 + WEEK, "o3", event_id="p3"),
        ]
    )
    assert credit_of(engine, "p1")["sharer_id"] == "alice"
    assert credit_of(engine, "p2")["sharer_id"] == "alice"
    assert credit_of(engine, "p3")["kind"] == "organic"


def test_self_referral_click_and_checkout_never_count() -> None:
    ev = Events()
    engine = run(
        [
            ev.click("alice", 0, kol="k1"),
            ev.share("alice", 5, "s1"),
            ev.click("alice", 10, share="s1"),
            ev.purchase("alice", 20, "o1", share="s1", event_id="p1"),
        ]
    )
    assert credit_of(engine, "p1") == {
        "kind": "kol", "sharer_id": None, "kol_id": "k1", "share_id": None,
        "touch_event_id": "e001", "share_depth": None,
    }  # fmt: skip
    assert engine.sharers() == {}


def test_a_click_through_a_share_is_judged_by_its_share_not_its_kol() -> None:
    ev = Events()
    engine = run(
        [
            ev.share("alice", 0, "s1"),
            ev.click("bob", 10, share="s1", kol="k1"),
            ev.click("carol", 10, share="never-shared", kol="k1"),
            ev.purchase("bob", 20, "o1", event_id="p1"),
            ev.purchase("carol", 20, "o2", event_id="p2"),
        ]
    )
    assert credit_of(engine, "p1")["kind"] == "referral"
    assert credit_of(engine, "p1")["kol_id"] is None  # the root share had no KOL
    assert credit_of(engine, "p2")["kind"] == "organic"


def test_a_purchase_whose_share_arrives_later_is_credited_once_it_arrives() -> None:
    ev = Events()
    share = ev.share("alice", 0, "s1", kol="k1")
    kol_click = ev.click("bob", 5, kol="k2")
    purchase = ev.purchase("bob", 20, "o1", share="s1", event_id="p1")
    engine = run([kol_click, purchase, share], batch_size=1)
    # Credit given too early (to the KOL) was retracted, then the referral credited.
    rows = [r for r in engine.rows if isinstance(r, CreditRow)]
    assert [(r.kind, r.sign) for r in rows] == [("kol", 1), ("kol", -1), ("referral", 1)]
    assert credit_of(engine, "p1")["sharer_id"] == "alice"
    assert credit_of(engine, "p1")["kol_id"] == "k1"


def test_a_touch_arriving_late_retracts_the_credit_given_too_early() -> None:
    ev = Events()
    first = ev.click("bob", 0, kol="k1")
    later = ev.click("bob", 10, kol="k2")
    purchase = ev.purchase("bob", 20, "o1", event_id="p1")
    engine = run([first, purchase, later], batch_size=1)
    signs = [(r.kol_id, r.revision, r.sign) for r in engine.rows if isinstance(r, CreditRow)]
    assert signs == [("k1", 1, 1), ("k1", 1, -1), ("k2", 2, 1)]
    assert credit_of(engine, "p1")["kol_id"] == "k2"


def test_a_click_whose_share_never_arrives_is_not_a_touch() -> None:
    ev = Events()
    engine = run(
        [
            ev.click("bob", 0, kol="k1"),
            ev.click("bob", 10, share="ghost"),
            ev.purchase("bob", 20, "o1", event_id="p1"),
        ]
    )
    assert credit_of(engine, "p1")["kol_id"] == "k1"


def test_a_duplicate_purchase_is_counted_and_credited_once() -> None:
    ev = Events()
    click = ev.click("bob", 0, kol="k1")
    purchase = ev.purchase("bob", 20, "o1", "12.5", event_id="p1")
    engine = run([click, purchase, purchase, click, purchase], batch_size=1)
    assert sum(1 for r in engine.rows if isinstance(r, CreditRow)) == 1
    assert credit_of(engine, "p1")["kol_id"] == "k1"
    loyalty = engine.loyalty()[("brand", "bob")]
    assert (loyalty.orders, loyalty.clicks, loyalty.amount_totals) == (1, 1, (Decimal("12.5"),))
