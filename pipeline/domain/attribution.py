"""The attribution rule: which touch, if any, takes credit for a purchase.

:func:`attribute_purchase` is the whole rule in one pure function. The user
processor calls it for every purchase whose inputs changed and emits the
difference from what it emitted before ("derive, then diff").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pipeline.domain.config import DomainConfig


class TouchKind(StrEnum):
    """What kind of touch a click (or a checkout through a share link) is."""

    KOL = "kol"
    REFERRAL = "referral"


class CreditKind(StrEnum):
    """Who a purchase is credited to."""

    REFERRAL = "referral"
    KOL = "kol"
    ORGANIC = "organic"


@dataclass(frozen=True, slots=True)
class Touch:
    """A resolved touch of one user, at event time ``at_us`` (µs since the epoch).

    A referral touch names the share's ``sharer_id`` and the chain's KOL in
    ``kol_id`` (the root share's ``kol_id``; ``None`` while the chain is not
    resolved or when the root had none). A KOL touch names its KOL in
    ``kol_id``. ``event_id`` is the click's, or the purchase's for a checkout
    through a share link.
    """

    event_id: str
    at_us: int
    kind: TouchKind
    kol_id: str | None = None
    share_id: str | None = None
    sharer_id: str | None = None
    share_depth: int | None = None
    root_share_id: str | None = None


@dataclass(frozen=True, slots=True)
class Purchase:
    """What the rule needs to know of a purchase: its event, buyer and event time (µs)."""

    event_id: str
    buyer_id: str
    at_us: int


@dataclass(frozen=True, slots=True)
class Credit:
    """The outcome of attribution for one purchase."""

    kind: CreditKind
    sharer_id: str | None = None
    kol_id: str | None = None
    share_id: str | None = None
    share_depth: int | None = None
    root_share_id: str | None = None
    touch_event_id: str | None = None
    touched_at_us: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "kind": self.kind.value,
            "sharer_id": self.sharer_id,
            "kol_id": self.kol_id,
            "share_id": self.share_id,
            "share_depth": self.share_depth,
            "root_share_id": self.root_share_id,
            "touch_event_id": self.touch_event_id,
            "touched_at_us": self.touched_at_us,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Credit:
        """Inverse of :meth:`to_dict`."""
        return cls(
            kind=CreditKind(d["kind"]),
            sharer_id=d["sharer_id"],
            kol_id=d["kol_id"],
            share_id=d["share_id"],
            share_depth=d["share_depth"],
            root_share_id=d["root_share_id"],
            touch_event_id=d["touch_event_id"],
            touched_at_us=d["touched_at_us"],
        )


ORGANIC = Credit(CreditKind.ORGANIC)
_KOL_TOUCH = TouchKind.KOL
_REFERRAL_TOUCH = TouchKind.REFERRAL
_KOL_CREDIT = CreditKind.KOL
_REFERRAL_CREDIT = CreditKind.REFERRAL


def counts_as_touch(touch: Touch, user_id: str) -> bool:
    """Whether ``touch`` counts for ``user_id``: self-referrals never count."""
    return touch.kind is _KOL_TOUCH or (touch.sharer_id is not None and touch.sharer_id != user_id)


def attribute_purchase(
    touches: Iterable[Touch], purchase: Purchase, config: DomainConfig
) -> Credit:
    """Credit ``purchase`` to the buyer's latest touch within the attribution window.

    Candidates are the buyer's touches with ``purchase.at_us - window <=
    touch.at_us <= purchase.at_us`` (event time, both ends inclusive) that
    count (:func:`counts_as_touch`: a referral through the buyer's own share
    never does). The latest candidate wins; at equal times the purchase's own
    checkout share link wins, then the larger ``event_id`` (an arbitrary but
    deterministic tie-break). A referral touch credits its sharer and the
    chain's KOL, a KOL touch credits its KOL; no candidate means organic.

    ``touches`` may hold anything; those outside the window are ignored, so the
    caller can pass a pre-selected slice to keep the work small.
    """
    lo = purchase.at_us - config.window_us
    hi = purchase.at_us
    best: Touch | None = None
    best_key: tuple[int, bool, str] | None = None
    for touch in touches:
        if touch.at_us < lo or touch.at_us > hi or not counts_as_touch(touch, purchase.buyer_id):
            continue
        key = (touch.at_us, touch.event_id == purchase.event_id, touch.event_id)
        if best_key is None or key > best_key:
            best, best_key = touch, key
    if best is None:
        return ORGANIC
    return Credit(
        kind=_REFERRAL_CREDIT if best.kind is _REFERRAL_TOUCH else _KOL_CREDIT,
        sharer_id=best.sharer_id,
        kol_id=best.kol_id,
        share_id=best.share_id,
        share_depth=best.share_depth,
        root_share_id=best.root_share_id,
        touch_event_id=best.event_id,
        touched_at_us=best.at_us,
    )
