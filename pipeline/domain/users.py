"""The ``user`` processor, keyed by user id: loyalty state and attribution.

State holds the lifetime counters (:class:`LoyaltyCounters`) and the user's
recent history: touches (clicks with a share or KOL, purchases through a share
link) and purchases within the horizon (attribution window + allowed lateness)
behind the watermark. Attribution is derived from that history by
:func:`attribute_purchase` and only the difference from what was emitted
before goes out: a ``CreditRow`` retraction (sign -1) and a new credit (sign
+1), and :class:`ReferralCredited` messages to the sharers concerned.

Event time rules (``L`` = allowed lateness, ``W`` = watermark, all µs):

- an event with ``occurred_at < W - L`` is too late: counted in the lifetime
  counters, reported with a ``LateEventRow``, but neither a touch nor attributed;
- a purchase's credit is final once ``occurred_at < W - L`` (no on-time touch
  can still precede it);
- history older than ``W - window - L`` is dropped; the earliest touch among
  dropped history is kept as the acquisition.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from decimal import Decimal
from operator import attrgetter
from typing import Any

from pipeline.contract.events import AnyEvent, ClickEvent, PurchaseEvent, ShareEvent
from pipeline.domain.attribution import (
    Credit,
    CreditKind,
    Purchase,
    Touch,
    TouchKind,
    attribute_purchase,
    counts_as_touch,
)
from pipeline.domain.config import DomainConfig, TierRule
from pipeline.domain.eventtime import to_us
from pipeline.domain.loyalty import loyalty_tier
from pipeline.domain.messages import (
    Addressed,
    KocStatusChanged,
    ProcessorName,
    ReferralCredited,
    ShareResolved,
    ShareWatched,
    UserMessage,
)
from pipeline.domain.processor import StepResult
from pipeline.domain.rows import TOO_LATE_FOR_ATTRIBUTION, CreditRow, LateEventRow, LoyaltyRow, Row
from pipeline.domain.user_state import PurchaseItem, ShareView, TouchItem, UserState

_at = attrgetter("at_us")
#: History order: event time, then event id.
_by_time = attrgetter("at_us", "event_id")
# Enum member access goes through a descriptor: read these once.
_USER = ProcessorName.USER
_SHARE = ProcessorName.SHARE
_SHARER = ProcessorName.SHARER
_KOL_TOUCH = TouchKind.KOL
_REFERRAL_TOUCH = TouchKind.REFERRAL
_REFERRAL_CREDIT = CreditKind.REFERRAL


class _StepOutput:
    """What one step emits: messages to other keys, rows, and whether the loyalty
    snapshot changed."""

    __slots__ = ("messages", "rows", "snapshot")

    def __init__(self) -> None:
        self.messages: list[Addressed] = []
        self.rows: list[Row] = []
        self.snapshot = False


class UserProcessor:
    """The ``user`` processor: one state per (brand, user id)."""

    name = ProcessorName.USER

    def __init__(self, config: DomainConfig) -> None:
        self.config = config

    def state_to_dict(self, state: UserState) -> dict[str, Any]:
        """JSON-safe form of a state (for a changelog-backed table)."""
        return state.to_dict()

    def state_from_dict(self, d: dict[str, Any]) -> UserState:
        """Inverse of :meth:`state_to_dict`."""
        return UserState.from_dict(d)

    def step(
        self, state: UserState | None, message: UserMessage, watermark_us: int
    ) -> StepResult[UserState]:
        """Apply one event or message for this user at watermark ``watermark_us`` (µs).

        Idempotent: an event already seen (by ``event_id``), a share version or
        KOC revision already applied, changes nothing and emits nothing.
        """
        if state is None:
            state = UserState(message.brand_id, message.user_id, watermark_us=watermark_us)
        out = _StepOutput()
        self._advance(state, watermark_us)
        if isinstance(message, ShareResolved):
            self._on_share_resolved(state, message, out)
        elif isinstance(message, KocStatusChanged):
            if message.revision > state.koc_revision:
                state.koc_revision = message.revision
                if message.koc_since_us != state.koc_since_us:
                    state.koc_since_us = message.koc_since_us
                    out.snapshot = True
        else:
            self._on_event(state, message, out)
        if out.snapshot:
            out.rows.append(self._snapshot(state))
        return StepResult(state, out.messages, out.rows)

    def expire(self, state: UserState, watermark_us: int) -> StepResult[UserState]:
        """Advance the watermark alone: drop history that left the horizon."""
        return StepResult(state, [], [], self._advance(state, watermark_us))

    # -- events -------------------------------------------------------------

    def _on_event(self, state: UserState, event: AnyEvent, out: _StepOutput) -> None:
        eid = event.event_id
        if eid in state.seen or eid in state.late_ids:
            return
        at = to_us(event.occurred_at)
        counters = state.counters
        if isinstance(event, ClickEvent):
            counters.count_click(at)
        elif isinstance(event, ShareEvent):
            counters.count_share(at)
        elif isinstance(event, PurchaseEvent):
            counters.count_purchase(at, event.amount, event.currency)
        else:  # a type with no count of its own: the user was active, nothing more
            counters.seen(at)
        out.snapshot = True
        if at < state.watermark_us - self.config.lateness_us:
            counters.late_events += 1
            state.late_ids[eid] = state.watermark_us
            out.rows.append(
                LateEventRow(
                    brand_id=state.brand_id,
                    processor=_USER,
                    subject_id=state.user_id,
                    event_id=eid,
                    event_type=event.type,
                    occurred_at_us=at,
                    watermark_us=state.watermark_us,
                    reason=TOO_LATE_FOR_ATTRIBUTION,
                )
            )
            return
        state.seen[eid] = at
        insort(state.timeline, (at, eid))
        if isinstance(event, ClickEvent):
            if event.share_id is not None or event.kol_id is not None:
                kol = event.kol_id if event.share_id is None else None
                self._add_touch(state, TouchItem(eid, at, event.share_id, kol), out)
                self._rederive(state, at, at + self.config.window_us, out)
        elif isinstance(event, PurchaseEvent):
            item = PurchaseItem(eid, event.order_id, at, event.amount, event.currency)
            insort(state.purchases, item, key=_by_time)
            if event.share_id is not None:
                # A checkout through a share link is a touch at purchase time.
                self._add_touch(state, TouchItem(eid, at, event.share_id, None), out)
                self._rederive(state, at, at + self.config.window_us, out)
            else:
                self._derive(state, item, out)

    def _add_touch(self, state: UserState, item: TouchItem, out: _StepOutput) -> None:
        insort(state.touches, item, key=_by_time)
        sid = item.share_id
        if sid is None:
            return
        state.share_refs[sid] = state.share_refs.get(sid, 0) + 1
        out.messages.append(
            Addressed(
                _SHARE,
                state.brand_id,
                sid,
                ShareWatched(
                    state.brand_id, sid, state.user_id, item.at_us + self.config.horizon_us
                ),
            )
        )

    def _on_share_resolved(self, state: UserState, msg: ShareResolved, out: _StepOutput) -> None:
        sid = msg.share_id
        if sid not in state.share_refs:
            return
        old = state.shares.get(sid)
        if old is not None and old.version >= msg.version:
            return
        new = ShareView(msg.version, msg.sharer_id, msg.depth, msg.root_share_id, msg.root_kol_id)
        if old is not None and old.same_facts(new):
            state.shares[sid] = new
            return
        acquisition_before = self._acquisition(state)
        state.shares[sid] = new
        times = [t.at_us for t in state.touches if t.share_id == sid]
        if times:
            self._rederive(state, min(times), max(times) + self.config.window_us, out)
        if self._acquisition(state) != acquisition_before:
            out.snapshot = True

    # -- attribution --------------------------------------------------------

    def _resolve(self, state: UserState, item: TouchItem) -> Touch | None:
        """The touch an item is, as far as known (None: its share is not known, yet)."""
        if item.share_id is None:
            return Touch(item.event_id, item.at_us, _KOL_TOUCH, kol_id=item.kol_id)
        view = state.shares.get(item.share_id)
        if view is None or view.sharer_id is None:
            return None
        return Touch(
            item.event_id,
            item.at_us,
            _REFERRAL_TOUCH,
            kol_id=view.root_kol_id,
            share_id=item.share_id,
            sharer_id=view.sharer_id,
            share_depth=view.depth,
            root_share_id=view.root_share_id,
        )

    def _rederive(self, state: UserState, lo_us: int, hi_us: int, out: _StepOutput) -> None:
        """Re-derive credits of purchases in [lo_us, hi_us] that are not final yet.

        A purchase is final once older than the watermark minus the allowed
        lateness, unless no credit was emitted for it yet.
        """
        final_before = state.watermark_us - self.config.lateness_us
        purchases = state.purchases
        i = bisect_left(purchases, lo_us, key=_at)
        while i < len(purchases) and purchases[i].at_us <= hi_us:
            item = purchases[i]
            if item.at_us >= final_before or item.credit is None:
                self._derive(state, item, out)
            i += 1

    def _derive(self, state: UserState, item: PurchaseItem, out: _StepOutput) -> None:
        touches = state.touches
        shares = state.shares
        lo = item.at_us - self.config.window_us
        # Walk back from the purchase: the latest touch that counts wins, so the walk stops
        # at the first one (keeping its equal-time rivals for the tie-break). Older touches,
        # known or still awaited, cannot change the outcome. This keeps the cost per
        # purchase small however long the user's history is.
        candidates: list[Touch] = []
        awaiting = False
        found_at: int | None = None
        j = bisect_right(touches, item.at_us, key=_at) - 1
        while j >= 0 and touches[j].at_us >= lo:
            if found_at is not None and touches[j].at_us < found_at:
                break
            touch = self._resolve(state, touches[j])
            if touch is not None:
                candidates.append(touch)
                if found_at is None and counts_as_touch(touch, state.user_id):
                    found_at = touch.at_us
            elif touches[j].share_id not in shares:
                awaiting = True
            j -= 1
        if awaiting and item.at_us >= state.watermark_us - self.config.lateness_us:
            # A share this purchase may owe credit to has been asked about and
            # the answer is on its way: wait for it rather than emit a credit
            # that the answer would retract (the answer re-derives this purchase).
            return
        credit = attribute_purchase(
            candidates, Purchase(item.event_id, state.user_id, item.at_us), self.config
        )
        old = item.credit
        if credit == old:
            return
        if old is not None:
            out.rows.append(_credit_row(state, item, old, -1))
        item.revision += 1
        item.credit = credit
        out.rows.append(_credit_row(state, item, credit, +1))
        old_sharer = old.sharer_id if old is not None and old.kind is _REFERRAL_CREDIT else None
        new_sharer = credit.sharer_id if credit.kind is _REFERRAL_CREDIT else None
        if old_sharer is not None and old_sharer != new_sharer:
            out.messages.append(_referral(state, item, old_sharer, active=False))
        if new_sharer is not None:
            out.messages.append(_referral(state, item, new_sharer, active=True))

    # -- loyalty ------------------------------------------------------------

    def _acquisition(self, state: UserState) -> Touch | None:
        """The user's first touch ever (by event time, then event id)."""
        if state.folded_acquisition is not None:
            # Dropped history is older than anything still held.
            return state.folded_acquisition
        for item in state.touches:
            touch = self._resolve(state, item)
            if touch is not None and counts_as_touch(touch, state.user_id):
                return touch
        return None

    def _snapshot(self, state: UserState) -> LoyaltyRow:
        state.version += 1
        return _loyalty_row(state, self._acquisition(state), self.config.tiers)

    # -- watermark ----------------------------------------------------------

    def _advance(self, state: UserState, watermark_us: int) -> bool:
        """Move the state to ``watermark_us``; False when nothing but its watermark changed."""
        if watermark_us <= state.watermark_us:
            return False
        state.watermark_us = watermark_us
        changed = False
        boundary = watermark_us - self.config.horizon_us
        timeline = state.timeline
        if timeline and timeline[0][0] < boundary:
            changed = True
            n = bisect_left(timeline, (boundary, ""))
            for _, eid in timeline[:n]:
                del state.seen[eid]
            del timeline[:n]
            touches = state.touches
            n = bisect_left(touches, boundary, key=_at)
            for item in touches[:n]:
                if state.folded_acquisition is None:
                    touch = self._resolve(state, item)
                    if touch is not None and counts_as_touch(touch, state.user_id):
                        state.folded_acquisition = touch
                sid = item.share_id
                if sid is not None:
                    left = state.share_refs[sid] - 1
                    if left:
                        state.share_refs[sid] = left
                    else:
                        del state.share_refs[sid]
                        state.shares.pop(sid, None)
            del touches[:n]
            del state.purchases[: bisect_left(state.purchases, boundary, key=_at)]
        if state.late_ids:
            keep_after = watermark_us - self.config.lateness_us
            kept = {e: w for e, w in state.late_ids.items() if w >= keep_after}
            if len(kept) != len(state.late_ids):
                state.late_ids = kept
                changed = True
        return changed


def _credit_row(state: UserState, item: PurchaseItem, credit: Credit, sign: int) -> CreditRow:
    return CreditRow(
        brand_id=state.brand_id,
        purchase_event_id=item.event_id,
        order_id=item.order_id,
        buyer_id=state.user_id,
        purchased_at_us=item.at_us,
        amount=item.amount,
        currency=item.currency,
        kind=credit.kind,
        sharer_id=credit.sharer_id,
        kol_id=credit.kol_id,
        share_id=credit.share_id,
        share_depth=credit.share_depth,
        root_share_id=credit.root_share_id,
        touch_event_id=credit.touch_event_id,
        touched_at_us=credit.touched_at_us,
        revision=item.revision,
        sign=sign,
    )


def _referral(state: UserState, item: PurchaseItem, sharer: str, *, active: bool) -> Addressed:
    return Addressed(
        _SHARER,
        state.brand_id,
        sharer,
        ReferralCredited(
            brand_id=state.brand_id,
            sharer_id=sharer,
            purchase_event_id=item.event_id,
            order_id=item.order_id,
            buyer_id=state.user_id,
            purchased_at_us=item.at_us,
            revision=item.revision,
            active=active,
        ),
    )


def _loyalty_row(state: UserState, acq: Touch | None, tiers: TierRule) -> LoyaltyRow:
    """The user's loyalty snapshot at ``state.version``, acquired by ``acq``."""
    c = state.counters
    amounts = c.amounts
    if len(amounts) == 1:
        currencies: tuple[str, ...] = tuple(amounts)
        totals: tuple[Decimal, ...] = tuple(amounts.values())
    else:
        currencies = tuple(sorted(amounts))
        totals = tuple([amounts[cur] for cur in currencies])
    since = state.koc_since_us
    if acq is None:
        kind = kol = referrer = share = event = None
        acquired_at = None
    else:
        kind, kol, referrer = acq.kind, acq.kol_id, acq.sharer_id
        share, event, acquired_at = acq.share_id, acq.event_id, acq.at_us
    # Positional: this runs once per event, and keywords cost more.
    return LoyaltyRow(
        state.brand_id,
        state.user_id,
        state.version,
        c.clicks,
        c.shares,
        c.orders,
        currencies,
        totals,
        c.first_seen_us,
        c.last_seen_us,
        c.first_purchase_us,
        c.second_purchase_us,
        c.last_purchase_us,
        c.orders >= 2,
        kind,
        kol,
        referrer,
        share,
        event,
        acquired_at,
        loyalty_tier(c.orders, amounts, since is not None, tiers),
        since is not None,
        since,
        c.late_events,
    )
