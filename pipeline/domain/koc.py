"""KOC promotion: the ``sharer`` processor, keyed by the sharer's user id.

The rule (:func:`first_koc_promotion`): a user becomes a KOC at the first
referred purchase at which at least N distinct other buyers made a purchase
credited to their shares within the last D (event time, both ends inclusive).
A buyer counts once however many orders they place; self-referrals never reach
here (attribution never credits them).

The sharer's state holds the referred purchases of the recent past (credits
may still change for one attribution window + allowed lateness, and the rule
looks back D more), derives the promotion from them, and emits the difference:
a ``KocPromotionRow`` retraction and a new one if a late credit moves the
promotion, and :class:`KocStatusChanged` to the user's own processor (for the
``advocate`` tier). Once the promotion is older than the horizon it is final.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.domain.config import DomainConfig
from pipeline.domain.eventtime import NO_WATERMARK
from pipeline.domain.messages import (
    Addressed,
    KocStatusChanged,
    ProcessorName,
    SharerMessage,
)
from pipeline.domain.processor import StepResult
from pipeline.domain.rows import TOO_LATE_FOR_KOC, KocPromotionRow, LateEventRow, Row, SharerRow


@dataclass(frozen=True, slots=True)
class Referral:
    """A purchase credited (``active``) or no longer credited to the sharer, at a revision."""

    purchase_event_id: str
    order_id: str
    buyer_id: str
    at_us: int
    revision: int
    active: bool


@dataclass(frozen=True, slots=True)
class Evidence:
    """One referred purchase that supports a promotion (event time µs)."""

    purchase_event_id: str
    order_id: str
    buyer_id: str
    at_us: int


@dataclass(frozen=True, slots=True)
class KocPromotion:
    """When the KOC rule first held (event time µs), and the referred purchases proving it.

    ``evidence`` holds every active referral in ``[promoted_at_us - D,
    promoted_at_us]``, sorted by (event time, purchase event id).
    """

    promoted_at_us: int
    promoting_purchase_event_id: str
    evidence: tuple[Evidence, ...]

    @property
    def buyer_ids(self) -> tuple[str, ...]:
        """The distinct buyers in the evidence, sorted."""
        return tuple(sorted({r.buyer_id for r in self.evidence}))


def first_koc_promotion(referrals: Iterable[Referral], config: DomainConfig) -> KocPromotion | None:
    """The earliest moment the KOC rule holds over ``referrals`` (inactive ones ignored).

    Scans referred purchases in (event time, purchase event id) order; the
    promotion happens at the first one after which the window ``[t - D, t]``
    holds at least ``koc_min_buyers`` distinct buyers.
    """
    ordered = sorted(
        (r for r in referrals if r.active), key=lambda r: (r.at_us, r.purchase_event_id)
    )
    buyers: Counter[str] = Counter()
    left = 0
    for i, referral in enumerate(ordered):
        t = referral.at_us
        buyers[referral.buyer_id] += 1
        while ordered[left].at_us < t - config.koc_window_us:
            gone = ordered[left].buyer_id
            buyers[gone] -= 1
            if not buyers[gone]:
                del buyers[gone]
            left += 1
        if len(buyers) >= config.koc_min_buyers:
            end = i + 1
            while end < len(ordered) and ordered[end].at_us == t:
                end += 1
            evidence = tuple(
                Evidence(r.purchase_event_id, r.order_id, r.buyer_id, r.at_us)
                for r in ordered[left:end]
            )
            return KocPromotion(t, referral.purchase_event_id, evidence)
    return None


@dataclass(slots=True)
class SharerState:
    """State of one sharer. Times are event-time µs since the epoch."""

    brand_id: str
    sharer_id: str
    watermark_us: int = NO_WATERMARK
    #: Version of the last SharerRow emitted.
    version: int = 0
    #: Recent referrals by purchase event id (inactive ones kept as tombstones).
    referrals: dict[str, Referral] = field(default_factory=dict)
    #: A lower bound of the event times in ``referrals`` (None: empty).
    oldest_us: int | None = None
    #: Purchases currently credited to this sharer, lifetime.
    referred_orders: int = 0
    last_referred_us: int | None = None
    #: The latest referred purchase among dropped history.
    folded_last_us: int | None = None
    promotion: KocPromotion | None = None
    promotion_revision: int = 0
    promotion_final: bool = False
    koc_revision: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        p = self.promotion
        return {
            "brand_id": self.brand_id,
            "sharer_id": self.sharer_id,
            "watermark_us": self.watermark_us,
            "version": self.version,
            "referrals": [_referral_to_list(r) for r in self.referrals.values()],
            "oldest_us": self.oldest_us,
            "referred_orders": self.referred_orders,
            "last_referred_us": self.last_referred_us,
            "folded_last_us": self.folded_last_us,
            "promotion": None
            if p is None
            else [
                p.promoted_at_us,
                p.promoting_purchase_event_id,
                [[e.purchase_event_id, e.order_id, e.buyer_id, e.at_us] for e in p.evidence],
            ],
            "promotion_revision": self.promotion_revision,
            "promotion_final": self.promotion_final,
            "koc_revision": self.koc_revision,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SharerState:
        """Inverse of :meth:`to_dict`."""
        p = d["promotion"]
        return cls(
            brand_id=d["brand_id"],
            sharer_id=d["sharer_id"],
            watermark_us=d["watermark_us"],
            version=d["version"],
            referrals={r[0]: Referral(*r) for r in d["referrals"]},
            oldest_us=d["oldest_us"],
            referred_orders=d["referred_orders"],
            last_referred_us=d["last_referred_us"],
            folded_last_us=d["folded_last_us"],
            promotion=None
            if p is None
            else KocPromotion(p[0], p[1], tuple(Evidence(*e) for e in p[2])),
            promotion_revision=d["promotion_revision"],
            promotion_final=d["promotion_final"],
            koc_revision=d["koc_revision"],
        )


def _referral_to_list(r: Referral) -> list[Any]:
    return [r.purchase_event_id, r.order_id, r.buyer_id, r.at_us, r.revision, r.active]


class SharerProcessor:
    """The ``sharer`` processor: one state per (brand, sharer user id)."""

    name = ProcessorName.SHARER

    def __init__(self, config: DomainConfig) -> None:
        self.config = config

    def state_to_dict(self, state: SharerState) -> dict[str, Any]:
        """JSON-safe form of a state (for a changelog-backed table)."""
        return state.to_dict()

    def state_from_dict(self, d: dict[str, Any]) -> SharerState:
        """Inverse of :meth:`state_to_dict`."""
        return SharerState.from_dict(d)

    def step(
        self, state: SharerState | None, message: SharerMessage, watermark_us: int
    ) -> StepResult[SharerState]:
        """Apply one referral credit (or retraction) at watermark ``watermark_us`` (µs).

        Idempotent and order-insensitive: for each purchase only the highest
        credit revision counts.
        """
        if state is None:
            state = SharerState(message.brand_id, message.sharer_id, watermark_us=watermark_us)
        messages: list[Addressed] = []
        rows: list[Row] = []
        self._advance(state, watermark_us)
        old = state.referrals.get(message.purchase_event_id)
        if old is not None and old.revision >= message.revision:
            return StepResult(state, messages, rows)
        before = (state.referred_orders, state.last_referred_us, state.promotion)
        at = message.purchased_at_us
        if at < self._fold_boundary(state):
            # Its history is gone: count it, but it can no longer change the promotion.
            rows.append(
                LateEventRow(
                    brand_id=state.brand_id,
                    processor=ProcessorName.SHARER.value,
                    subject_id=state.sharer_id,
                    event_id=message.purchase_event_id,
                    event_type="referral_credit",
                    occurred_at_us=at,
                    watermark_us=state.watermark_us,
                    reason=TOO_LATE_FOR_KOC,
                )
            )
            if message.active:
                state.referred_orders += 1
                state.last_referred_us = _max(state.last_referred_us, at)
                state.folded_last_us = _max(state.folded_last_us, at)
        else:
            new = Referral(
                message.purchase_event_id,
                message.order_id,
                message.buyer_id,
                at,
                message.revision,
                message.active,
            )
            state.referrals[new.purchase_event_id] = new
            if state.oldest_us is None or at < state.oldest_us:
                state.oldest_us = at
            was_active = old is not None and old.active
            state.referred_orders += int(new.active) - int(was_active)
            if new.active:
                state.last_referred_us = _max(state.last_referred_us, at)
            elif was_active and at == state.last_referred_us:
                state.last_referred_us = self._last_referred(state)
            if new.active != was_active:
                self._rederive(state, at, messages, rows)
        if (state.referred_orders, state.last_referred_us, state.promotion) != before:
            state.version += 1
            rows.append(self._snapshot(state))
        return StepResult(state, messages, rows)

    def expire(self, state: SharerState, watermark_us: int) -> StepResult[SharerState]:
        """Advance the watermark alone: finalise the promotion, drop old history."""
        return StepResult(state, [], [], self._advance(state, watermark_us))

    def _fold_boundary(self, state: SharerState) -> int:
        return state.watermark_us - self.config.horizon_us - self.config.koc_window_us

    @staticmethod
    def _last_referred(state: SharerState) -> int | None:
        last = state.folded_last_us
        for r in state.referrals.values():
            if r.active:
                last = _max(last, r.at_us)
        return last

    def _rederive(
        self, state: SharerState, changed_at_us: int, messages: list[Addressed], rows: list[Row]
    ) -> None:
        old = state.promotion
        if state.promotion_final or (old is not None and changed_at_us > old.promoted_at_us):
            # A change after the promotion cannot move its moment or its evidence.
            return
        new = first_koc_promotion(state.referrals.values(), self.config)
        if new == old:
            return
        if old is not None:
            rows.append(self._promotion_row(state, old, -1))
        if new is not None:
            state.promotion_revision += 1
            rows.append(self._promotion_row(state, new, +1))
        state.promotion = new
        old_since = None if old is None else old.promoted_at_us
        new_since = None if new is None else new.promoted_at_us
        if old_since != new_since:
            state.koc_revision += 1
            messages.append(
                Addressed(
                    ProcessorName.USER,
                    state.brand_id,
                    state.sharer_id,
                    KocStatusChanged(
                        state.brand_id, state.sharer_id, state.koc_revision, new_since
                    ),
                )
            )

    @staticmethod
    def _promotion_row(state: SharerState, p: KocPromotion, sign: int) -> KocPromotionRow:
        return KocPromotionRow(
            brand_id=state.brand_id,
            sharer_id=state.sharer_id,
            promoted_at_us=p.promoted_at_us,
            promoting_purchase_event_id=p.promoting_purchase_event_id,
            buyer_ids=p.buyer_ids,
            evidence_purchase_event_ids=tuple(r.purchase_event_id for r in p.evidence),
            evidence_order_ids=tuple(r.order_id for r in p.evidence),
            evidence_buyer_ids=tuple(r.buyer_id for r in p.evidence),
            evidence_purchased_at_us=tuple(r.at_us for r in p.evidence),
            revision=state.promotion_revision,
            sign=sign,
        )

    @staticmethod
    def _snapshot(state: SharerState) -> SharerRow:
        since = None if state.promotion is None else state.promotion.promoted_at_us
        return SharerRow(
            brand_id=state.brand_id,
            sharer_id=state.sharer_id,
            version=state.version,
            referred_orders=state.referred_orders,
            last_referred_purchase_us=state.last_referred_us,
            is_koc=since is not None,
            koc_since_us=since,
        )

    def _advance(self, state: SharerState, watermark_us: int) -> bool:
        """Move the state to ``watermark_us``; False when nothing but its watermark changed."""
        if watermark_us <= state.watermark_us:
            return False
        state.watermark_us = watermark_us
        changed = False
        p = state.promotion
        if (
            p is not None
            and not state.promotion_final
            and p.promoted_at_us < watermark_us - self.config.horizon_us
        ):
            state.promotion_final = True
            changed = True
        boundary = self._fold_boundary(state)
        if state.oldest_us is None or state.oldest_us >= boundary:
            return changed
        kept: dict[str, Referral] = {}
        for pid, r in state.referrals.items():
            if r.at_us >= boundary:
                kept[pid] = r
            elif r.active:
                state.folded_last_us = _max(state.folded_last_us, r.at_us)
        state.referrals = kept
        state.oldest_us = min((r.at_us for r in kept.values()), default=None)
        return True


def _max(a: int | None, b: int) -> int:
    return b if a is None or b > a else a
