"""Per-user lifetime loyalty counters and the loyalty tier.

Every counter is commutative (sums, minimums, maximums, the two smallest
purchase times), so the lifetime state does not depend on arrival order, and
events too late for attribution are still counted exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pipeline.domain.config import TierRule


class LoyaltyTier(StrEnum):
    """Stratification of users by purchase behaviour (thresholds in :class:`TierRule`)."""

    VISITOR = "visitor"
    CUSTOMER = "customer"
    REPEAT = "repeat"
    LOYAL = "loyal"
    ADVOCATE = "advocate"


# Enum member access goes through a descriptor; these are read once per event.
_ADVOCATE = LoyaltyTier.ADVOCATE
_LOYAL = LoyaltyTier.LOYAL
_REPEAT = LoyaltyTier.REPEAT
_CUSTOMER = LoyaltyTier.CUSTOMER
_VISITOR = LoyaltyTier.VISITOR


def loyalty_tier(
    orders: int, amounts: Mapping[str, Decimal], is_koc: bool, rule: TierRule
) -> LoyaltyTier:
    """The tier of a user with ``orders`` lifetime orders and ``amounts`` per currency."""
    if is_koc:
        return _ADVOCATE
    if orders >= rule.loyal_min_orders:
        return _LOYAL
    if amounts:
        for currency, threshold in rule.loyal_min_amounts:
            amount = amounts.get(currency)
            if amount is not None and amount >= threshold:
                return _LOYAL
    if orders >= rule.repeat_min_orders:
        return _REPEAT
    if orders >= rule.customer_min_orders:
        return _CUSTOMER
    return _VISITOR


def _min(a: int | None, b: int) -> int:
    return b if a is None or b < a else a


def _max(a: int | None, b: int) -> int:
    return b if a is None or b > a else a


@dataclass(slots=True)
class LoyaltyCounters:
    """A user's lifetime counters; times are event-time µs since the epoch.

    ``second_purchase_us`` is the event time of the second purchase in event
    time order (the repurchase); with ``first_purchase_us``,
    ``last_purchase_us``, ``orders`` and ``amounts`` it is what RFM and
    repurchase analyses need at query time.
    """

    clicks: int = 0
    shares: int = 0
    orders: int = 0
    amounts: dict[str, Decimal] = field(default_factory=dict)
    first_seen_us: int | None = None
    last_seen_us: int | None = None
    first_purchase_us: int | None = None
    second_purchase_us: int | None = None
    last_purchase_us: int | None = None
    #: Events counted here that were too late for attribution.
    late_events: int = 0

    def seen(self, at_us: int) -> None:
        """The user was active at event time ``at_us`` (any event)."""
        self.first_seen_us = _min(self.first_seen_us, at_us)
        self.last_seen_us = _max(self.last_seen_us, at_us)

    def count_click(self, at_us: int) -> None:
        """Count one click at event time ``at_us``."""
        self.clicks += 1
        self.seen(at_us)

    def count_share(self, at_us: int) -> None:
        """Count one share at event time ``at_us``."""
        self.shares += 1
        self.seen(at_us)

    def count_purchase(self, at_us: int, amount: Decimal, currency: str) -> None:
        """Count one order of ``amount`` ``currency`` at event time ``at_us``."""
        self.orders += 1
        self.amounts[currency] = self.amounts.get(currency, Decimal(0)) + amount
        self.seen(at_us)
        first = self.first_purchase_us
        if first is None:
            self.first_purchase_us = at_us
        elif at_us < first:
            self.second_purchase_us, self.first_purchase_us = first, at_us
        elif self.second_purchase_us is None or at_us < self.second_purchase_us:
            self.second_purchase_us = at_us
        self.last_purchase_us = _max(self.last_purchase_us, at_us)

    @property
    def repurchased(self) -> bool:
        """Whether the user has placed more than one order."""
        return self.orders >= 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (amounts as decimal strings)."""
        return {
            "clicks": self.clicks,
            "shares": self.shares,
            "orders": self.orders,
            "amounts": {c: str(a) for c, a in self.amounts.items()},
            "first_seen_us": self.first_seen_us,
            "last_seen_us": self.last_seen_us,
            "first_purchase_us": self.first_purchase_us,
            "second_purchase_us": self.second_purchase_us,
            "last_purchase_us": self.last_purchase_us,
            "late_events": self.late_events,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoyaltyCounters:
        """Inverse of :meth:`to_dict`."""
        return cls(
            clicks=d["clicks"],
            shares=d["shares"],
            orders=d["orders"],
            amounts={c: Decimal(a) for c, a in d["amounts"].items()},
            first_seen_us=d["first_seen_us"],
            last_seen_us=d["last_seen_us"],
            first_purchase_us=d["first_purchase_us"],
            second_purchase_us=d["second_purchase_us"],
            last_purchase_us=d["last_purchase_us"],
            late_events=d["late_events"],
        )
