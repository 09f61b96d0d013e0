"""Batch oracle: every domain output recomputed from the whole event list.

Written independently of ``pipeline.domain`` (it imports only the event
models) and as plainly as possible: no windows kept incrementally, no
watermarks, no messages. It sees every event at once, sorted by event time,
and states each rule of docs/domain.md directly, so the streaming core can be
checked against it.

Outputs are plain dicts keyed by ``(brand_id, id)``; times are microseconds
since the epoch.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pipeline.contract.events import AnyEvent, ClickEvent, PurchaseEvent, ShareEvent

Event = AnyEvent
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def micros(moment: dt.datetime) -> int:
    """Microseconds since the epoch."""
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class OracleParams:
    """The rules' parameters (seconds), mirrored from the domain config by the tests."""

    window_s: int = 7 * 86400
    koc_min_buyers: int = 2
    koc_window_s: int = 30 * 86400
    customer_min_orders: int = 1
    repeat_min_orders: int = 2
    loyal_min_orders: int = 5
    loyal_min_amounts: tuple[tuple[str, Decimal], ...] = (("CNY", Decimal("5000")),)


@dataclass
class OracleResult:
    """Everything the pipeline should end up with."""

    loyalty: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    chains: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    credits: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    promotions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    sharers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def recompute(events: list[Event], params: OracleParams | None = None) -> OracleResult:
    """Recompute every output from ``events`` (any order, duplicates allowed)."""
    p = params or OracleParams()
    window = p.window_s * 1_000_000
    koc_window = p.koc_window_s * 1_000_000

    # Dedup by (brand, event_id), then sort by event time.
    unique: dict[tuple[str, str], Event] = {}
    for ev in events:
        unique.setdefault((ev.brand_id, ev.event_id), ev)
    log = sorted(unique.values(), key=lambda e: (micros(e.occurred_at), e.event_id))

    # Share records: the earliest share event of each share id.
    shares: dict[tuple[str, str], ShareEvent] = {}
    for ev in log:
        if isinstance(ev, ShareEvent):
            shares.setdefault((ev.brand_id, ev.share_id), ev)

    def chain(brand: str, share_id: str) -> tuple[int, str, str | None] | None:
        """(depth, root share, root's KOL), or None if an ancestor is missing or a cycle."""
        visited: list[str] = []
        current = share_id
        while True:
            record = shares.get((brand, current))
            if record is None or current in visited:
                return None
            visited.append(current)
            if record.parent_share_id is None:
                return (len(visited) - 1, current, record.kol_id)
            current = record.parent_share_id

    out = OracleResult()
    for (brand, sid), rec in shares.items():
        c = chain(brand, sid)
        out.chains[(brand, sid)] = {
            "event_id": rec.event_id,
            "sharer_id": rec.user_id,
            "parent_share_id": rec.parent_share_id,
            "kol_id": rec.kol_id,
            "shared_at_us": micros(rec.occurred_at),
            "depth": None if c is None else c[0],
            "root_share_id": None if c is None else c[1],
            "root_kol_id": None if c is None else c[2],
            "resolved": c is not None,
        }

    # Touches of each user.
    def referral(ev: ClickEvent | PurchaseEvent, share_id: str) -> dict[str, Any] | None:
        rec = shares.get((ev.brand_id, share_id))
        if rec is None or rec.user_id == ev.user_id:
            return None  # unknown share, or a self-referral: not a touch
        c = chain(ev.brand_id, share_id)
        return {
            "at": micros(ev.occurred_at),
            "event_id": ev.event_id,
            "kind": "referral",
            "sharer_id": rec.user_id,
            "kol_id": None if c is None else c[2],
            "share_id": share_id,
            "share_depth": None if c is None else c[0],
            "root_share_id": None if c is None else c[1],
        }

    touches: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for ev in log:
        touch: dict[str, Any] | None = None
        if isinstance(ev, ClickEvent | PurchaseEvent) and ev.share_id is not None:
            touch = referral(ev, ev.share_id)
        elif isinstance(ev, ClickEvent) and ev.kol_id is not None:
            touch = {
                "at": micros(ev.occurred_at),
                "event_id": ev.event_id,
                "kind": "kol",
                "sharer_id": None,
                "kol_id": ev.kol_id,
                "share_id": None,
                "share_depth": None,
                "root_share_id": None,
            }
        if touch is not None:
            touches.setdefault((ev.brand_id, ev.user_id), []).append(touch)

    # Attribution of each purchase.
    for ev in log:
        if not isinstance(ev, PurchaseEvent):
            continue
        t = micros(ev.occurred_at)
        candidates = [
            c for c in touches.get((ev.brand_id, ev.user_id), []) if t - window <= c["at"] <= t
        ]
        own = [c for c in candidates if c["event_id"] == ev.event_id]
        if own:
            best: dict[str, Any] | None = own[0]
        elif candidates:
            best = max(candidates, key=lambda c: (c["at"], c["event_id"]))
        else:
            best = None
        out.credits[(ev.brand_id, ev.event_id)] = {
            "order_id": ev.order_id,
            "buyer_id": ev.user_id,
            "purchased_at_us": t,
            "amount": ev.amount,
            "currency": ev.currency,
            "kind": "organic" if best is None else best["kind"],
            "sharer_id": None if best is None else best["sharer_id"],
            "kol_id": None if best is None else best["kol_id"],
            "share_id": None if best is None else best["share_id"],
            "share_depth": None if best is None else best["share_depth"],
            "root_share_id": None if best is None else best["root_share_id"],
            "touch_event_id": None if best is None else best["event_id"],
            "touched_at_us": None if best is None else best["at"],
        }

    # KOC promotion of each sharer: the first referred purchase at which the
    # purchases so far within the last D came from N distinct buyers.
    referred: dict[tuple[str, str], list[tuple[int, str, str, str]]] = {}
    for (brand, pid), credit in out.credits.items():
        if credit["kind"] == "referral":
            referred.setdefault((brand, credit["sharer_id"]), []).append(
                (credit["purchased_at_us"], pid, credit["order_id"], credit["buyer_id"])
            )
    for key, items in referred.items():
        items.sort()
        out.sharers[key] = {
            "referred_orders": len(items),
            "last_referred_purchase_us": max(i[0] for i in items),
            "koc_since_us": None,
        }
        for at, pid, _order, _buyer in items:
            so_far = [i for i in items if (i[0], i[1]) <= (at, pid) and i[0] >= at - koc_window]
            if len({i[3] for i in so_far}) >= p.koc_min_buyers:
                evidence = [i for i in items if at - koc_window <= i[0] <= at]
                out.promotions[key] = {
                    "promoted_at_us": at,
                    "promoting_purchase_event_id": pid,
                    "buyer_ids": tuple(sorted({i[3] for i in evidence})),
                    "evidence_purchase_event_ids": tuple(i[1] for i in evidence),
                    "evidence_order_ids": tuple(i[2] for i in evidence),
                    "evidence_buyer_ids": tuple(i[3] for i in evidence),
                    "evidence_purchased_at_us": tuple(i[0] for i in evidence),
                }
                out.sharers[key]["koc_since_us"] = at
                break

    # Loyalty of each user.
    for ev in log:
        key = (ev.brand_id, ev.user_id)
        t = micros(ev.occurred_at)
        u = out.loyalty.setdefault(
            key,
            {"clicks": 0, "shares": 0, "orders": 0, "amounts": {}, "seen": [], "purchases": []},
        )
        u["seen"].append(t)
        if isinstance(ev, ClickEvent):
            u["clicks"] += 1
        elif isinstance(ev, ShareEvent):
            u["shares"] += 1
        else:
            u["orders"] += 1
            u["amounts"][ev.currency] = u["amounts"].get(ev.currency, Decimal(0)) + ev.amount
            u["purchases"].append(t)
    for key, u in out.loyalty.items():
        seen, bought, amounts = u.pop("seen"), u.pop("purchases"), u.pop("amounts")
        user_touches = touches.get(key, [])
        first = min(user_touches, key=lambda c: (c["at"], c["event_id"])) if user_touches else None
        promotion = out.promotions.get(key)
        if promotion is not None:
            tier = "advocate"
        elif u["orders"] >= p.loyal_min_orders or any(
            amounts.get(cur, Decimal(0)) >= thr for cur, thr in p.loyal_min_amounts
        ):
            tier = "loyal"
        elif u["orders"] >= p.repeat_min_orders:
            tier = "repeat"
        elif u["orders"] >= p.customer_min_orders:
            tier = "customer"
        else:
            tier = "visitor"
        u.update(
            amount_currencies=tuple(sorted(amounts)),
            amount_totals=tuple(amounts[c] for c in sorted(amounts)),
            first_seen_us=min(seen),
            last_seen_us=max(seen),
            first_purchase_us=bought[0] if bought else None,
            second_purchase_us=bought[1] if len(bought) > 1 else None,
            last_purchase_us=bought[-1] if bought else None,
            repurchased=len(bought) > 1,
            acquisition_kind=None if first is None else first["kind"],
            acquisition_kol_id=None if first is None else first["kol_id"],
            acquisition_referrer_id=None if first is None else first["sharer_id"],
            acquisition_share_id=None if first is None else first["share_id"],
            acquisition_event_id=None if first is None else first["event_id"],
            acquired_at_us=None if first is None else first["at"],
            tier=tier,
            is_koc=promotion is not None,
            koc_since_us=None if promotion is None else promotion["promoted_at_us"],
            late_events=0,
        )
    return out
