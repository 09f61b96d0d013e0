"""Share chains: sharer, parent, depth, root and the root's KOL, in any arrival order."""

from __future__ import annotations

import itertools

from pipeline.domain import Engine, ShareChainRow
from tests.unit.domain.builders import Event, Events, credit_of, run


def chain(row: ShareChainRow) -> tuple[object, ...]:
    return (row.sharer_id, row.parent_share_id, row.depth, row.root_share_id, row.root_kol_id)


def test_a_root_share_is_depth_zero_and_carries_its_own_kol() -> None:
    ev = Events()
    engine = run([ev.share("alice", 0, "s1", kol="k1")])
    row = engine.share_chains()[("brand", "s1")]
    assert chain(row) == ("alice", None, 0, "s1", "k1")
    assert row.resolved


def test_a_chain_of_depth_3_resolves_in_every_arrival_order() -> None:
    ev = Events()
    shares: list[Event] = [
        ev.share("alice", 0, "s0", kol="k1"),
        ev.share("bob", 10, "s1", parent="s0"),
        ev.share("carol", 20, "s2", parent="s1", kol="k-ignored"),
        ev.share("dave", 30, "s3", parent="s2"),
    ]
    click = ev.click("erin", 40, share="s3")
    purchase = ev.purchase("erin", 50, "o1", event_id="p1")
    for share_order in itertools.permutations(shares):
        for order in ([click, purchase, *share_order], [*share_order, click, purchase]):
            check_depth_3(run(order, batch_size=1))


def check_depth_3(engine: Engine) -> None:
    chains = engine.share_chains()
    assert [chain(chains[("brand", f"s{i}")]) for i in range(4)] == [
        ("alice", None, 0, "s0", "k1"),
        ("bob", "s0", 1, "s0", "k1"),
        ("carol", "s1", 2, "s0", "k1"),
        ("dave", "s2", 3, "s0", "k1"),
    ]
    # Only the direct sharer is credited, with the chain's KOL.
    assert credit_of(engine, "p1") == {
        "kind": "referral", "sharer_id": "dave", "kol_id": "k1", "share_id": "s3",
        "touch_event_id": "e005", "share_depth": 3,
    }  # fmt: skip


def test_a_share_whose_parent_is_unknown_stays_unresolved_but_credits_its_sharer() -> None:
    ev = Events()
    engine = run(
        [
            ev.share("bob", 10, "s1", parent="never-seen"),
            ev.click("erin", 40, share="s1"),
            ev.purchase("erin", 50, "o1", event_id="p1"),
        ]
    )
    row = engine.share_chains()[("brand", "s1")]
    assert chain(row) == ("bob", "never-seen", None, None, None)
    assert not row.resolved
    assert credit_of(engine, "p1")["sharer_id"] == "bob"
    assert credit_of(engine, "p1")["kol_id"] is None


def test_shares_whose_parents_form_a_cycle_stay_unresolved() -> None:
    ev = Events()
    engine = run(
        [
            ev.share("alice", 0, "a", parent="b"),
            ev.share("bob", 1, "b", parent="a"),
            ev.share("carol", 2, "c", parent="c"),
        ]
    )
    assert all(not row.resolved for row in engine.share_chains().values())
    assert len(engine.share_chains()) == 3


def test_when_two_share_events_claim_one_share_id_the_earliest_wins_in_any_order() -> None:
    ev = Events()
    early = ev.share("alice", 0, "s1", kol="k1")
    late = ev.share("mallory", 5, "s1", parent="s0")
    for order in ([early, late], [late, early]):
        engine = run(order, batch_size=1)
        assert chain(engine.share_chains()[("brand", "s1")]) == ("alice", None, 0, "s1", "k1")


def test_a_click_that_arrives_before_its_share_waits_for_it() -> None:
    ev = Events()
    share = ev.share("alice", 0, "s1", kol="k1")
    click = ev.click("bob", 10, share="s1")
    purchase = ev.purchase("bob", 20, "o1", event_id="p1")
    engine = run([click, purchase, share], batch_size=1)
    assert credit_of(engine, "p1")["sharer_id"] == "alice"
    assert engine.loyalty()[("brand", "bob")].acquisition_referrer_id == "alice"


def test_a_re_share_credits_only_its_own_sharer() -> None:
    ev = Events()
    engine = run(
        [
            ev.share("alice", 0, "s1"),
            ev.click("bob", 1, share="s1"),
            ev.share("bob", 2, "s2", parent="s1"),
            ev.click("carol", 3, share="s2"),
            ev.purchase("carol", 4, "o1", event_id="p1"),
        ]
    )
    assert credit_of(engine, "p1")["sharer_id"] == "bob"
    assert ("brand", "alice") not in engine.sharers()
