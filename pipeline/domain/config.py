"""Domain rules' parameters: one frozen object, defaults as docs/domain.md states them.

All durations are whole seconds of event time. The streaming layer builds a
:class:`DomainConfig` from its settings and hands the same object to every
processor; the batch oracle in the tests takes the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from pipeline.domain.eventtime import seconds_to_us

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class TierRule:
    """Thresholds of the loyalty tiers, checked from the top down.

    - ``advocate``: the user is a KOC (see :class:`DomainConfig` ``koc_*``);
    - ``loyal``: at least ``loyal_min_orders`` orders, or a lifetime amount in
      some currency at least its threshold in ``loyal_min_amounts``;
    - ``repeat``: at least ``repeat_min_orders`` orders;
    - ``customer``: at least ``customer_min_orders`` orders;
    - ``visitor``: otherwise.
    """

    customer_min_orders: int = 1
    repeat_min_orders: int = 2
    loyal_min_orders: int = 5
    #: (ISO 4217 currency, lifetime amount) pairs; any one reached makes the user loyal.
    loyal_min_amounts: tuple[tuple[str, Decimal], ...] = (("CNY", Decimal("5000")),)

    def __post_init__(self) -> None:
        if not 0 < self.customer_min_orders <= self.repeat_min_orders <= self.loyal_min_orders:
            raise ValueError(
                "tier thresholds must satisfy 0 < customer_min_orders <= repeat_min_orders"
                f" <= loyal_min_orders, got {self.customer_min_orders}, "
                f"{self.repeat_min_orders}, {self.loyal_min_orders}"
            )


@dataclass(frozen=True, slots=True)
class DomainConfig:
    """Parameters of every domain rule (durations in seconds of event time).

    - ``attribution_window_s``: a touch can take credit for a purchase that
      occurred at most this long after it (both ends inclusive). Default 7 days.
    - ``allowed_lateness_s``: an event whose ``occurred_at`` is older than the
      watermark minus this is *too late*: it is still counted in the lifetime
      loyalty state, but it takes no part in attribution or KOC promotion and is
      reported with a ``LateEventRow``. Default 1 day.
    - ``koc_min_buyers`` / ``koc_window_s``: a user becomes a KOC at the first
      referred purchase at which at least N distinct other buyers were referred
      by their shares within the last D (inclusive). Defaults N=2, D=30 days.
    - ``tiers``: loyalty tier thresholds (:class:`TierRule`).

    History is kept for ``attribution_window_s + allowed_lateness_s`` behind the
    watermark (the *horizon*); older history is dropped, its effect being
    already in the lifetime counters.
    """

    attribution_window_s: int = 7 * DAY_S
    allowed_lateness_s: int = 1 * DAY_S
    koc_min_buyers: int = 2
    koc_window_s: int = 30 * DAY_S
    tiers: TierRule = field(default_factory=TierRule)

    window_us: int = field(init=False, repr=False, compare=False)
    lateness_us: int = field(init=False, repr=False, compare=False)
    koc_window_us: int = field(init=False, repr=False, compare=False)
    horizon_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attribution_window_s < 0 or self.allowed_lateness_s < 0 or self.koc_window_s < 0:
            raise ValueError(
                "attribution_window_s, allowed_lateness_s and koc_window_s must be >= 0"
            )
        if self.koc_min_buyers < 1:
            raise ValueError(f"koc_min_buyers must be >= 1, got {self.koc_min_buyers}")
        object.__setattr__(self, "window_us", seconds_to_us(self.attribution_window_s))
        object.__setattr__(self, "lateness_us", seconds_to_us(self.allowed_lateness_s))
        object.__setattr__(self, "koc_window_us", seconds_to_us(self.koc_window_s))
        object.__setattr__(self, "horizon_us", self.window_us + self.lateness_us)
