"""Event builders and runners for the domain tests.

Times are whole seconds after ``T0`` (event time); event ids are given or
numbered in creation order, so tie-breaks on ``event_id`` are predictable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

from pipeline.contract.events import AnyEvent, ClickEvent, PurchaseEvent, ShareEvent
from pipeline.domain import DomainConfig, Engine

Event = AnyEvent
T0 = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
HOUR = 3600
DAY = 86_400
WEEK = 7 * DAY


def at(seconds: int) -> dt.datetime:
    """``T0`` plus ``seconds``."""
    return T0 + dt.timedelta(seconds=seconds)


def us(seconds: int) -> int:
    """Event-time microseconds of ``at(seconds)``."""
    return (at(seconds) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


class Events:
    """Builds events with numbered ids (e001, e002, ...) unless an id is given."""

    def __init__(self, brand: str = "brand") -> None:
        self.brand = brand
        self.n = 0

    def _id(self, event_id: str | None) -> str:
        self.n += 1
        return event_id or f"e{self.n:03d}"

    def click(
        self,
        user: str,
        t: int,
        *,
        share: str | None = None,
        kol: str | None = None,
        event_id: str | None = None,
    ) -> ClickEvent:
        return ClickEvent(
            event_id=self._id(event_id), type="click", schema_version=1, brand_id=self.brand,
            user_id=user, occurred_at=at(t), channel="app", share_id=share, kol_id=kol,
        )  # fmt: skip

    def share(
        self,
        user: str,
        t: int,
        share_id: str,
        *,
        parent: str | None = None,
        kol: str | None = None,
        event_id: str | None = None,
    ) -> ShareEvent:
        return ShareEvent(
            event_id=self._id(event_id), type="share", schema_version=1, brand_id=self.brand,
            user_id=user, occurred_at=at(t), channel="wechat_group", share_id=share_id,
            parent_share_id=parent, kol_id=kol,
        )  # fmt: skip

    def purchase(
        self,
        user: str,
        t: int,
        order: str,
        amount: str = "10",
        *,
        currency: str = "CNY",
        share: str | None = None,
        event_id: str | None = None,
    ) -> PurchaseEvent:
        return PurchaseEvent(
            event_id=self._id(event_id), type="purchase", schema_version=1, brand_id=self.brand,
            user_id=user, occurred_at=at(t), channel="mini_program", order_id=order,
            amount=Decimal(amount), currency=currency, share_id=share,
        )  # fmt: skip


def run(
    events: Iterable[Event],
    config: DomainConfig | None = None,
    *,
    batch_size: int = 1000,
    finish: bool = True,
) -> Engine:
    """Feed ``events`` in the given order through a FIFO engine (one batch by default)."""
    engine = Engine(config, roundtrip=True)
    engine.feed(events, batch_size=batch_size)
    if finish:
        engine.finish()
    return engine


def credit_of(engine: Engine, purchase_event_id: str) -> dict[str, object]:
    """The one net credit of a purchase, as a dict without identity fields."""
    found = [
        row for row, n in engine.net_credits().items() if row.purchase_event_id == purchase_event_id
    ]
    assert len(found) == 1, found
    assert engine.net_credits()[found[0]] == 1
    row = found[0].to_dict()
    return {
        k: v
        for k, v in row.items()
        if k in ("kind", "sharer_id", "kol_id", "share_id", "touch_event_id", "share_depth")
    }
