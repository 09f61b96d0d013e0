"""Property tests: streaming through the engine equals the batch oracle.

Random event logs (re-shares, missing and cyclic parents, self-referrals,
purchases through share links, times on day boundaries ±1 s so that window
edges are hit exactly, duplicates) are fed in a random arrival order that
respects the allowed lateness, with random delivery order of the messages
between keys and random re-deliveries. The final rows must equal the oracle's
recomputation from the whole log, and no event may be reported late.
"""

from __future__ import annotations

import os
import random
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pipeline.domain import DomainConfig, Engine, StepResult
from pipeline.domain.messages import Addressed
from tests.oracle import OracleParams, OracleResult, recompute
from tests.unit.domain.builders import DAY, HOUR, Event, Events
from tests.unit.domain.compare import assert_same

#: Multiply example counts, e.g. DOMAIN_PROPERTY_SCALE=50 for a long soak.
SCALE = int(os.environ.get("DOMAIN_PROPERTY_SCALE", "1"))

CONFIGS = [
    DomainConfig(),
    # Compressed: many more events fall near the window, lateness and KOC edges.
    DomainConfig(attribution_window_s=2 * DAY, allowed_lateness_s=12 * HOUR, koc_window_s=3 * DAY),
    DomainConfig(
        attribution_window_s=DAY, allowed_lateness_s=DAY, koc_min_buyers=3, koc_window_s=2 * DAY
    ),
    # Every referred buyer promotes: exercises promotions moving and being retracted.
    DomainConfig(
        attribution_window_s=3 * DAY, allowed_lateness_s=DAY, koc_min_buyers=1, koc_window_s=DAY
    ),
]


def params_of(config: DomainConfig) -> OracleParams:
    return OracleParams(
        window_s=config.attribution_window_s,
        koc_min_buyers=config.koc_min_buyers,
        koc_window_s=config.koc_window_s,
        customer_min_orders=config.tiers.customer_min_orders,
        repeat_min_orders=config.tiers.repeat_min_orders,
        loyal_min_orders=config.tiers.loyal_min_orders,
        loyal_min_amounts=config.tiers.loyal_min_amounts,
    )


@st.composite
def event_logs(draw: st.DrawFn, config: DomainConfig) -> list[Event]:
    """A causally ordered log: shares exist (in event time) before what points at them."""
    n = draw(st.integers(1, 28))
    step = config.attribution_window_s // draw(st.sampled_from([1, 2, 7]))
    span = draw(st.sampled_from([2, 6, 12]))
    times = sorted(
        draw(
            st.lists(
                st.one_of(
                    st.builds(
                        lambda k, e: k * step + e,
                        st.integers(0, span),
                        st.sampled_from([-1, 0, 0, 1]),
                    ),
                    st.integers(0, span * step),
                ),
                min_size=n,
                max_size=n,
            )
        )
    )
    brands = draw(st.sampled_from([["b1"], ["b1"], ["b1", "b2"]]))
    kinds = draw(
        st.sampled_from(
            [
                ["click", "click", "share", "purchase", "purchase"],
                ["click", "share", "share", "purchase"],
            ]
        )
    )
    users = [f"u{i}" for i in range(draw(st.integers(1, 5)))]
    builders = {b: Events(b) for b in brands}
    shares: dict[str, list[str]] = {b: [] for b in brands}
    log: list[Event] = []
    for i, t in enumerate(times):
        brand = draw(st.sampled_from(brands))
        ev = builders[brand]
        user = draw(st.sampled_from(users))
        kind = draw(st.sampled_from(kinds))
        known = shares[brand]
        # 0-3: no share, 4-8: a known share, 9: a share that never exists.
        pick = draw(st.integers(0, 9))
        ref = None if pick < 4 or (pick < 9 and not known) else "ghost"
        if 4 <= pick < 9 and known:
            # Half the time the newest share, which grows deep chains.
            ref = known[-1] if pick >= 7 else draw(st.sampled_from(known))
        kol = draw(st.sampled_from([None, None, "k1", "k2"]))
        eid = f"{brand}-e{i:03d}"
        if kind == "click":
            log.append(ev.click(user, t, share=ref, kol=kol, event_id=eid))
        elif kind == "share":
            share_id = f"{brand}-s{i}"
            # Sometimes re-use an id (a conflicting record) or point at itself (a cycle).
            if known and draw(st.integers(0, 9)) == 0:
                share_id = draw(st.sampled_from(known))
            parent = ref if pick > 2 else None
            if pick == 9 and draw(st.booleans()):
                parent = share_id
            log.append(ev.share(user, t, share_id, parent=parent, kol=kol, event_id=eid))
            if share_id not in known:
                known.append(share_id)
        else:
            amount = draw(st.sampled_from(["0", "9.99", "100", "2500.5", "5000"]))
            currency = draw(st.sampled_from(["CNY", "CNY", "USD"]))
            log.append(
                ev.purchase(user, t, f"o{i}", amount, currency=currency, share=ref, event_id=eid)
            )
    return log


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[DomainConfig, list[Event], list[Event], int, float, int]:
    config = draw(st.sampled_from(CONFIGS))
    log = draw(event_logs(config))
    dups = draw(st.lists(st.sampled_from(log), max_size=4))
    lateness = config.allowed_lateness_s
    delay = st.one_of(st.just(0), st.just(lateness), st.integers(0, lateness))
    arrivals = [
        (int(e.occurred_ts) + draw(delay), draw(st.integers(0, 1000)), i, e)
        for i, e in enumerate([*log, *dups])
    ]
    arrival_order = [e for *_, e in sorted(arrivals, key=lambda a: a[:3])]
    batch_size = draw(st.integers(1, 6))
    redeliver = draw(st.sampled_from([0.0, 0.3]))
    seed = draw(st.integers(0, 2**32))
    return config, log, arrival_order, batch_size, redeliver, seed


def run_engine(
    config: DomainConfig,
    arrival_order: list[Event],
    batch_size: int,
    redeliver: float,
    seed: int,
    *,
    engine_cls: type[Engine] = Engine,
) -> Engine:
    engine = engine_cls(
        config,
        rng=random.Random(seed),
        redeliver_probability=redeliver,
        roundtrip=seed % 4 == 0,
    )
    engine.feed(arrival_order, batch_size=batch_size)
    engine.finish()
    return engine


def assert_bounded(engine: Engine) -> None:
    """After the end of input every history is dropped: only lifetime state is left."""
    from pipeline.domain import ProcessorName

    for user in engine.states[ProcessorName.USER].values():
        assert not (user.seen or user.touches or user.purchases or user.shares or user.late_ids)
    for share in engine.states[ProcessorName.SHARE].values():
        assert not share.watchers
    for sharer in engine.states[ProcessorName.SHARER].values():
        assert not sharer.referrals


@settings(max_examples=400 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_streaming_equals_batch_oracle_for_any_arrival_and_delivery_order(
    scenario: tuple[DomainConfig, list[Event], list[Event], int, float, int],
) -> None:
    config, log, arrival_order, batch_size, redeliver, seed = scenario
    engine = run_engine(config, arrival_order, batch_size, redeliver, seed)
    assert engine.late_events() == []
    expected = recompute(log, params_of(config))
    assert_same(engine, expected)
    assert_bounded(engine)
    label_coverage(engine, expected)


def label_coverage(engine: Engine, expected: OracleResult) -> None:
    """Name what an example exercised (see --hypothesis-show-statistics)."""
    from pipeline.domain import CreditRow

    kinds = {c["kind"] for c in expected.credits.values()}
    for kind in sorted(kinds):
        event(f"credit: {kind}")
    if any(c["share_depth"] and c["share_depth"] >= 2 for c in expected.credits.values()):
        event("credit through a chain of depth >= 2")
    if any(isinstance(r, CreditRow) and r.sign < 0 for r in engine.rows):
        event("a credit was retracted")
    if expected.promotions:
        event("KOC promotion")
    if any((c["depth"] or 0) >= 2 for c in expected.chains.values()):
        event("a share at depth >= 2")
    event(f"events: {len(expected.credits) // 5 * 5}+ purchases")
    if any(not c["resolved"] for c in expected.chains.values()):
        event("unresolved chain")


class IdempotenceCheckingEngine(Engine):
    """Applies every message a second time to the state it produced, and checks nothing moves."""

    def deliver(self, addressed: Addressed) -> StepResult[Any]:
        result = super().deliver(addressed)
        processor = self.processors[addressed.processor]
        before = None if result.state is None else processor.state_to_dict(result.state)
        copy = None if before is None else processor.state_from_dict(before)
        again = processor.step(copy, addressed.message, self.watermark_us)
        after = None if again.state is None else processor.state_to_dict(again.state)
        assert after == before, addressed
        assert again.rows == [], addressed
        # Only replies are re-sent, identical to the first ones (their receivers ignore them).
        assert all(m in result.messages for m in again.messages), addressed
        return result


@settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_step_is_idempotent_to_a_redelivered_message(
    scenario: tuple[DomainConfig, list[Event], list[Event], int, float, int],
) -> None:
    config, _log, arrival_order, batch_size, redeliver, seed = scenario
    run_engine(
        config, arrival_order, batch_size, redeliver, seed, engine_cls=IdempotenceCheckingEngine
    )


@settings(max_examples=60 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 2**32))
def test_two_arrival_orders_give_identical_final_rows(
    scenario: tuple[DomainConfig, list[Event], list[Event], int, float, int], other_seed: int
) -> None:
    config, log, arrival_order, batch_size, redeliver, seed = scenario
    first = run_engine(config, arrival_order, batch_size, redeliver, seed)
    shuffled = sorted(log, key=lambda e: (e.occurred_ts, random.Random(other_seed).random()))
    second = run_engine(config, shuffled, 1, 0.0, other_seed)
    from tests.unit.domain.compare import engine_result

    assert engine_result(first) == engine_result(second)
    # Amount sums stay exact decimals.
    for row in first.loyalty().values():
        assert all(isinstance(a, Decimal) for a in row.amount_totals)


@settings(max_examples=100 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.randoms(use_true_random=False))
def test_events_beyond_the_allowed_lateness_are_counted_and_reported_never_dropped(
    scenario: tuple[DomainConfig, list[Event], list[Event], int, float, int],
    rng: random.Random,
) -> None:
    config, log, _arrival_order, batch_size, redeliver, seed = scenario
    anarchy = [*log]
    rng.shuffle(anarchy)  # any order at all: some events will be too late
    engine = run_engine(config, anarchy, batch_size, redeliver, seed)
    expected = recompute(log, params_of(config))
    got = {k: dict(row.to_dict()) for k, row in engine.loyalty().items()}
    lifetime = ("clicks", "shares", "orders", "first_seen_us", "last_seen_us", "last_purchase_us")
    for key, want in expected.loyalty.items():
        assert {f: got[key][f] for f in lifetime} == {f: want[f] for f in lifetime}
        assert engine.loyalty()[key].amount_totals == want["amount_totals"]
    late = {(r.brand_id, r.event_id) for r in engine.late_events() if r.processor == "user"}
    assert len(late) == len(engine.late_events()) - sum(
        1 for r in engine.late_events() if r.processor != "user"
    )
    assert sum(row.late_events for row in engine.loyalty().values()) == len(late)
    credited = {(c.brand_id, c.purchase_event_id) for c in engine.net_credits()}
    assert all(n == 1 for n in engine.net_credits().values())
    purchases = {k for k in expected.credits}
    assert credited | (late & purchases) == purchases
    assert not credited & late
    event("some events too late" if late else "nothing too late")
