"""The ``user`` processor's state: lifetime counters and the user's recent history.

Plain data with its JSON form (``to_dict`` / ``from_dict``, what the state table and its
changelog hold); what happens to it is :mod:`pipeline.domain.users`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pipeline.domain.attribution import Credit, Touch, TouchKind
from pipeline.domain.eventtime import NO_WATERMARK
from pipeline.domain.loyalty import LoyaltyCounters


@dataclass(slots=True)
class TouchItem:
    """A click through a share or from a KOL, or a purchase through a share link.

    ``share_id`` set: a referral touch once the share is known (its sharer is
    not this user); otherwise a KOL touch for ``kol_id``.
    """

    event_id: str
    at_us: int
    share_id: str | None
    kol_id: str | None


@dataclass(slots=True)
class PurchaseItem:
    """A recent purchase and the credit last emitted for it (``revision`` counts credits)."""

    event_id: str
    order_id: str
    at_us: int
    amount: Decimal
    currency: str
    credit: Credit | None = None
    revision: int = 0


@dataclass(frozen=True, slots=True)
class ShareView:
    """What this user was told about a share (``sharer_id`` None: not known yet)."""

    version: int
    sharer_id: str | None
    depth: int | None
    root_share_id: str | None
    root_kol_id: str | None

    def same_facts(self, other: ShareView) -> bool:
        """Equal apart from the version."""
        return (
            self.sharer_id == other.sharer_id
            and self.depth == other.depth
            and self.root_share_id == other.root_share_id
            and self.root_kol_id == other.root_kol_id
        )


@dataclass(slots=True)
class UserState:
    """State of one user. Times are event-time µs since the epoch."""

    brand_id: str
    user_id: str
    watermark_us: int = NO_WATERMARK
    #: Version of the last LoyaltyRow emitted.
    version: int = 0
    counters: LoyaltyCounters = field(default_factory=LoyaltyCounters)
    #: The earliest touch among history already dropped (the acquisition, once set).
    folded_acquisition: Touch | None = None
    #: Every on-time event within the horizon: event id -> event time (dedup).
    seen: dict[str, int] = field(default_factory=dict)
    #: ``seen`` as sorted (event time, event id), for dropping old history.
    timeline: list[tuple[int, str]] = field(default_factory=list)
    #: Recent touches and purchases, each sorted by (event time, event id).
    touches: list[TouchItem] = field(default_factory=list)
    purchases: list[PurchaseItem] = field(default_factory=list)
    #: Shares that recent touches point at: what is known of them, and how many touches.
    shares: dict[str, ShareView] = field(default_factory=dict)
    share_refs: dict[str, int] = field(default_factory=dict)
    #: Events judged too late: event id -> watermark then (kept for one allowed lateness).
    late_ids: dict[str, int] = field(default_factory=dict)
    koc_revision: int = 0
    koc_since_us: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "brand_id": self.brand_id,
            "user_id": self.user_id,
            "watermark_us": self.watermark_us,
            "version": self.version,
            "counters": self.counters.to_dict(),
            "folded_acquisition": _touch_to_list(self.folded_acquisition),
            "timeline": [[at, eid] for at, eid in self.timeline],
            "touches": [[t.event_id, t.at_us, t.share_id, t.kol_id] for t in self.touches],
            "purchases": [
                [
                    p.event_id,
                    p.order_id,
                    p.at_us,
                    str(p.amount),
                    p.currency,
                    None if p.credit is None else p.credit.to_dict(),
                    p.revision,
                ]
                for p in self.purchases
            ],
            "shares": {
                sid: [v.version, v.sharer_id, v.depth, v.root_share_id, v.root_kol_id]
                for sid, v in self.shares.items()
            },
            "share_refs": self.share_refs,
            "late_ids": self.late_ids,
            "koc_revision": self.koc_revision,
            "koc_since_us": self.koc_since_us,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UserState:
        """Inverse of :meth:`to_dict`."""
        timeline = [(at, eid) for at, eid in d["timeline"]]
        return cls(
            brand_id=d["brand_id"],
            user_id=d["user_id"],
            watermark_us=d["watermark_us"],
            version=d["version"],
            counters=LoyaltyCounters.from_dict(d["counters"]),
            folded_acquisition=_touch_from_list(d["folded_acquisition"]),
            seen={eid: at for at, eid in timeline},
            timeline=timeline,
            touches=[TouchItem(*t) for t in d["touches"]],
            purchases=[
                PurchaseItem(
                    p[0],
                    p[1],
                    p[2],
                    Decimal(p[3]),
                    p[4],
                    None if p[5] is None else Credit.from_dict(p[5]),
                    p[6],
                )
                for p in d["purchases"]
            ],
            shares={sid: ShareView(*v) for sid, v in d["shares"].items()},
            share_refs=dict(d["share_refs"]),
            late_ids=dict(d["late_ids"]),
            koc_revision=d["koc_revision"],
            koc_since_us=d["koc_since_us"],
        )


def _touch_to_list(t: Touch | None) -> list[Any] | None:
    if t is None:
        return None
    return [
        t.event_id,
        t.at_us,
        t.kind.value,
        t.kol_id,
        t.share_id,
        t.sharer_id,
        t.share_depth,
        t.root_share_id,
    ]


def _touch_from_list(raw: list[Any] | None) -> Touch | None:
    if raw is None:
        return None
    return Touch(raw[0], raw[1], TouchKind(raw[2]), raw[3], raw[4], raw[5], raw[6], raw[7])
