"""Event time, watermarks, allowed lateness and bounded memory."""

from __future__ import annotations

from pipeline.domain import (
    TOO_LATE_FOR_ATTRIBUTION,
    CreditRow,
    DomainConfig,
    Engine,
    ProcessorName,
    UserProcessor,
)
from tests.unit.domain.builders import DAY, HOUR, WEEK, Event, Events, us

CONFIG = DomainConfig()  # window 7 days, allowed lateness 1 day


def test_an_event_later_than_allowed_lateness_is_counted_and_reported_not_attributed() -> None:
    ev = Events()
    engine = Engine(CONFIG)
    engine.feed([ev.click("bob", 0, kol="k1"), ev.click("carol", 3 * DAY)])
    late = ev.purchase("bob", DAY, "o1", "30", event_id="late-purchase")
    engine.feed([late])
    engine.finish()
    (row,) = engine.late_events()
    assert (row.processor, row.subject_id, row.event_id, row.event_type, row.reason) == (
        "user", "bob", "late-purchase", "purchase", TOO_LATE_FOR_ATTRIBUTION,
    )  # fmt: skip
    assert (row.occurred_at_us, row.watermark_us) == (us(DAY), us(3 * DAY))
    loyalty = engine.loyalty()[("brand", "bob")]
    assert (loyalty.orders, loyalty.late_events, loyalty.last_purchase_us) == (1, 1, us(DAY))
    assert not any(isinstance(r, CreditRow) for r in engine.rows)


def test_an_event_exactly_at_the_allowed_lateness_is_on_time() -> None:
    ev = Events()
    engine = Engine(CONFIG)
    engine.feed([ev.click("bob", 0, kol="k1"), ev.click("carol", 2 * DAY)])
    engine.feed([ev.purchase("bob", DAY, "o1", event_id="p1")])
    engine.finish()
    assert engine.late_events() == []
    assert [r.kol_id for r in engine.rows if isinstance(r, CreditRow)] == ["k1"]


def test_a_late_event_delivered_twice_is_counted_once() -> None:
    ev = Events()
    engine = Engine(CONFIG)
    engine.feed([ev.click("carol", 3 * DAY)])
    late = ev.click("bob", 0)
    engine.feed([late, late])
    engine.finish()
    assert engine.loyalty()[("brand", "bob")].clicks == 1
    assert len(engine.late_events()) == 1


def test_history_older_than_window_plus_lateness_is_dropped() -> None:
    ev = Events()
    engine = Engine(CONFIG)
    # A click and a purchase every hour for 60 days; some through shares.
    events: list[Event] = [ev.share("alice", 0, "s1")]
    for h in range(60 * 24):
        events.append(ev.click("bob", h * HOUR, share="s1" if h % 3 else None, kol="k1"))
        events.append(ev.purchase("bob", h * HOUR + 1, f"o{h}"))
    engine.feed(events, batch_size=50)
    engine.expire_all()  # expiry is lazy: a key drops its history when next touched
    bob = engine.states[ProcessorName.USER][("brand", "bob")]
    horizon_hours = (WEEK + DAY) // HOUR + 1
    assert len(bob.touches) <= horizon_hours
    assert len(bob.purchases) <= horizon_hours
    assert len(bob.seen) <= 2 * horizon_hours
    assert bob.counters.orders == 60 * 24
    share = engine.states[ProcessorName.SHARE][("brand", "s1")]
    assert list(share.watchers) == ["bob"]
    alice = engine.states[ProcessorName.SHARER][("brand", "alice")]
    assert len(alice.referrals) <= (WEEK + DAY + 30 * DAY) // HOUR + 1
    assert alice.referred_orders == sum(1 for r in engine.net_credits() if r.kind == "referral")


def test_the_watermark_never_goes_back() -> None:
    processor = UserProcessor(CONFIG)
    ev = Events()
    state = processor.step(None, ev.click("bob", 10 * DAY), us(10 * DAY)).state
    assert state is not None
    result = processor.step(state, ev.click("bob", 0), us(0))
    assert result.state is not None and result.state.watermark_us == us(10 * DAY)
    assert len(result.rows) == 2  # the late report and the snapshot


def test_expire_drops_history_without_a_message() -> None:
    processor = UserProcessor(CONFIG)
    ev = Events()
    state = processor.step(None, ev.click("bob", 0, kol="k1"), us(0)).state
    assert state is not None and len(state.touches) == 1
    after = processor.expire(state, us(WEEK + DAY) + 1).state
    assert after is not None and after.touches == [] and after.seen == {}
    assert after.folded_acquisition is not None


def test_a_late_share_event_still_joins_its_chain_and_is_reported_for_its_sharer() -> None:
    ev = Events()
    engine = Engine(CONFIG)
    engine.feed([ev.click("carol", 3 * DAY)])
    engine.feed([ev.share("alice", 0, "s1", kol="k1", event_id="late-share")])
    engine.finish()
    assert engine.share_chains()[("brand", "s1")].resolved
    (row,) = engine.late_events()
    assert (row.subject_id, row.event_type) == ("alice", "share")
    assert engine.loyalty()[("brand", "alice")].shares == 1


def test_a_referral_credit_reaching_a_sharer_after_its_history_is_counted_and_reported() -> None:
    from pipeline.domain import TOO_LATE_FOR_KOC, ReferralCredited, SharerProcessor

    processor = SharerProcessor(CONFIG)
    watermark = us(100 * DAY)
    credit = ReferralCredited("brand", "alice", "p1", "o1", "bob", us(0), 1, True)
    result = processor.step(None, credit, watermark)
    assert result.state is not None
    late = [r for r in result.rows if r.table == "late_events"]
    assert [(r.event_id, r.reason) for r in late] == [("p1", TOO_LATE_FOR_KOC)]  # type: ignore[union-attr]
    assert result.state.referred_orders == 1
    assert result.state.promotion is None


def test_out_of_order_koc_status_and_share_answers_keep_the_newest() -> None:
    from pipeline.domain import KocStatusChanged, ShareResolved

    processor = UserProcessor(CONFIG)
    ev = Events()
    state = processor.step(None, ev.click("bob", 0, share="s1"), us(0)).state
    newer = ShareResolved("brand", "bob", "s1", 2, "alice", 0, "s1", "k1")
    older = ShareResolved("brand", "bob", "s1", 1, "mallory", None, None, None)
    state = processor.step(state, newer, us(0)).state
    result = processor.step(state, older, us(0))
    assert result.rows == [] and result.state is not None
    assert result.state.shares["s1"].sharer_id == "alice"
    state = processor.step(result.state, KocStatusChanged("brand", "bob", 2, None), us(0)).state
    result = processor.step(state, KocStatusChanged("brand", "bob", 1, us(5)), us(0))
    assert result.rows == [] and result.state is not None
    assert result.state.koc_since_us is None
