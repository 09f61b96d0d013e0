"""A seeded, realistic-enough event log for end-to-end tests of the streaming pipeline.

KOL clicks, shares and re-shares (chains), referral clicks (some of them self-clicks),
purchases with and without share links, repeat buyers; then duplicates, and an arrival
order that is out of event-time order across keys (a click can arrive before its share, a
purchase before the click that earned it) but never later than the allowed lateness.
Event times are whole seconds, so ClickHouse's DateTime keeps them exactly.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from decimal import Decimal

from pipeline.contract.events import AnyEvent, ClickEvent, PurchaseEvent, ShareEvent

Event = AnyEvent
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Scenario:
    """``events``: each distinct event once, in event-time order. ``arrival``: what is sent,
    in sending order (with duplicates)."""

    events: list[Event]
    arrival: list[Event]


def generate(
    seed: int,
    n_events: int = 3000,
    n_users: int = 150,
    spacing_s: int = 400,
    max_delay_s: int = 6 * 3600,
    duplicate_rate: float = 0.05,
    brands: tuple[str, ...] = ("acme", "bright"),
    heavy_share: float = 0.3,
) -> Scenario:
    """``n_events`` events about ``spacing_s`` apart; arrival delayed by up to ``max_delay_s``
    (keep it under the allowed lateness). ``heavy_share`` of the events come from a
    Pareto-distributed head of very active users, the rest from uniformly chosen ones."""
    rng = random.Random(seed)
    events: list[Event] = []
    shares: dict[str, list[tuple[str, str]]] = {b: [] for b in brands}  # (share_id, sharer)
    kols = [f"kol-{i}" for i in range(6)]
    t = START
    for i in range(n_events):
        t += dt.timedelta(seconds=rng.randint(1, 2 * spacing_s))
        brand = rng.choice(brands)
        # A heavy head of active users, so some become KOCs and repeat buyers.
        if rng.random() >= heavy_share:
            user = f"u{rng.randrange(n_users)}"
        else:
            user = f"u{min(int(rng.paretovariate(1.2)) - 1, n_users - 1)}"
        common = {
            "event_id": f"{brand}-e{i}",
            "schema_version": 1,
            "brand_id": brand,
            "user_id": user,
            "occurred_at": t,
            "channel": rng.choice(["app", "wechat_group", "mini_program", "kol_post"]),
        }
        roll = rng.random()
        known = shares[brand]
        if roll < 0.25:
            events.append(ClickEvent(type="click", kol_id=rng.choice(kols), **common))
        elif roll < 0.45 and known:
            share_id, sharer = rng.choice(known)
            if rng.random() < 0.1:
                common["user_id"] = sharer  # a self-click never counts
            events.append(ClickEvent(type="click", share_id=share_id, **common))
        elif roll < 0.65:
            share_id = f"{brand}-s{i}"
            parent = rng.choice(known)[0] if known and rng.random() < 0.4 else None
            kol = rng.choice(kols) if parent is None and rng.random() < 0.3 else None
            events.append(
                ShareEvent(
                    type="share", share_id=share_id, parent_share_id=parent, kol_id=kol, **common
                )
            )
            known.append((share_id, user))
        else:
            via = rng.choice(known)[0] if known and rng.random() < 0.2 else None
            events.append(
                PurchaseEvent(
                    type="purchase",
                    order_id=f"{brand}-o{i}",
                    share_id=via,
                    amount=Decimal(rng.choice(["19.90", "59.00", "99.00", "399.00", "1299.00"])),
                    currency="CNY",
                    **common,
                )
            )
    arrival = list(events)
    arrival += [rng.choice(events) for _ in range(int(len(events) * duplicate_rate))]
    delays = {id(e): rng.randint(0, max_delay_s) for e in arrival}
    arrival.sort(key=lambda e: e.occurred_at + dt.timedelta(seconds=delays[id(e)]))
    return Scenario(events, arrival)
