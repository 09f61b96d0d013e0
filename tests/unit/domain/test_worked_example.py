"""The worked example of docs/domain.md, checked in every arrival order of a few kinds."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest

from pipeline.contract.events import AnyEvent, ClickEvent, PurchaseEvent, ShareEvent
from pipeline.domain import CreditRow, Engine, KocPromotionRow, to_us
from tests.oracle import recompute
from tests.unit.domain.compare import assert_same

CST = dt.timezone(dt.timedelta(hours=8))


def t(hh: int, mm: int) -> dt.datetime:
    return dt.datetime(2026, 11, 2, hh, mm, tzinfo=CST)


COMMON = {"schema_version": 1, "brand_id": "acme"}
EXAMPLE: list[AnyEvent] = [
    ClickEvent(event_id="e1", type="click", user_id="A", occurred_at=t(10, 0),
               channel="kol_post", kol_id="k1", **COMMON),
    ShareEvent(event_id="e2", type="share", user_id="A", occurred_at=t(10, 5),
               channel="wechat_group", share_id="s1", kol_id="k1", **COMMON),
    ClickEvent(event_id="e3", type="click", user_id="B", occurred_at=t(11, 0),
               channel="wechat_group", share_id="s1", **COMMON),
    ShareEvent(event_id="e4", type="share", user_id="B", occurred_at=t(11, 30),
               channel="wechat_group", share_id="s2", parent_share_id="s1", **COMMON),
    ClickEvent(event_id="e5", type="click", user_id="C", occurred_at=t(12, 0),
               channel="wechat_group", share_id="s2", **COMMON),
    PurchaseEvent(event_id="e6", type="purchase", user_id="C", occurred_at=t(12, 30),
                  channel="mini_program", order_id="o1", amount=Decimal("199.00"),
                  currency="CNY", **COMMON),
    PurchaseEvent(event_id="e7", type="purchase", user_id="B", occurred_at=t(13, 0),
                  channel="mini_program", order_id="o2", amount=Decimal("99.00"),
                  currency="CNY", share_id="s2", **COMMON),
    PurchaseEvent(event_id="e8", type="purchase", user_id="A", occurred_at=t(14, 0),
                  channel="mini_program", order_id="o3", amount=Decimal("59.00"),
                  currency="CNY", share_id="s2", **COMMON),
]  # fmt: skip


def check(engine: Engine) -> None:
    credits = {
        c.order_id: (c.kind, c.sharer_id, c.kol_id, c.share_id, c.share_depth, c.touch_event_id)
        for c in engine.net_credits()
    }
    assert credits == {
        "o1": ("referral", "B", "k1", "s2", 1, "e5"),
        "o2": ("referral", "A", "k1", "s1", 0, "e3"),  # B's own share link does not count
        "o3": ("referral", "B", "k1", "s2", 1, "e8"),  # checkout through B's share
    }
    chains = {
        k[1]: (r.depth, r.root_share_id, r.root_kol_id) for k, r in engine.share_chains().items()
    }
    assert chains == {"s1": (0, "s1", "k1"), "s2": (1, "s1", "k1")}
    (promotion,) = engine.net_promotions()
    assert (promotion.sharer_id, promotion.promoted_at_us, promotion.buyer_ids) == (
        "B", to_us(t(14, 0)), ("A", "C"),
    )  # fmt: skip
    assert promotion.evidence_order_ids == ("o1", "o3")
    loyalty = {k[1]: r for k, r in engine.loyalty().items()}
    summary = {
        u: (r.tier, r.orders, r.amount_totals, r.acquisition_kind, r.acquisition_kol_id,
            r.acquisition_referrer_id)
        for u, r in loyalty.items()
    }  # fmt: skip
    assert summary == {
        "A": ("customer", 1, (Decimal("59.00"),), "kol", "k1", None),
        "B": ("advocate", 1, (Decimal("99.00"),), "referral", "k1", "A"),
        "C": ("customer", 1, (Decimal("199.00"),), "referral", "k1", "B"),
    }
    sharers = {k[1]: (r.referred_orders, r.is_koc) for k, r in engine.sharers().items()}
    assert sharers == {"A": (1, False), "B": (2, True)}
    assert_same(engine, recompute(EXAMPLE))


def test_worked_example_in_event_time_order() -> None:
    engine = Engine()
    engine.feed(EXAMPLE)
    engine.finish()
    check(engine)
    # In event-time order nothing is ever retracted.
    assert all(r.sign == 1 for r in engine.rows if isinstance(r, CreditRow | KocPromotionRow))


@pytest.mark.parametrize("seed", range(20))
def test_worked_example_in_shuffled_order(seed: int) -> None:
    events = EXAMPLE[:]
    random.Random(seed).shuffle(events)  # all within a day: within the allowed lateness
    engine = Engine(rng=random.Random(seed), redeliver_probability=0.2, roundtrip=True)
    engine.feed(events, batch_size=1 + seed % 3)
    engine.finish()
    check(engine)


def test_worked_example_purchase_before_click_emits_a_retraction() -> None:
    # C's purchase arrives before the click that earned it.
    order = [e for e in EXAMPLE if e.event_id != "e5"]
    order.insert(order.index(EXAMPLE[5]) + 1, EXAMPLE[4])
    engine = Engine()
    engine.feed(order)
    engine.finish()
    o1 = [
        (r.kind, r.sharer_id, r.sign)
        for r in engine.rows
        if isinstance(r, CreditRow) and r.order_id == "o1"
    ]
    assert o1 == [("organic", None, 1), ("organic", None, -1), ("referral", "B", 1)]
    check(engine)
