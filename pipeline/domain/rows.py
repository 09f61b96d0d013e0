"""Row changes for the ClickHouse sink.

Two kinds of rows, both safe to insert twice:

- *Snapshot* rows (:class:`LoyaltyRow`, :class:`ShareChainRow`,
  :class:`SharerRow`) carry the whole current state of one key and a
  ``version`` that increases by one at each change of that key: store them in a
  ``ReplacingMergeTree(version)`` ordered by :meth:`key`. A snapshot is emitted
  only when the key's state changed.
- *Signed* rows (:class:`CreditRow`, :class:`KocPromotionRow`) say "this
  outcome holds" (``sign=+1``) or "this outcome no longer holds" (``sign=-1``,
  a retraction, same fields as the row it cancels). Each outcome of one
  purchase (or one sharer's promotion) has its own ``revision``, and the pair
  (``revision``, ``sign``) identifies a row, so a re-sent row can be
  deduplicated (``ReplacingMergeTree`` ordered by :meth:`key`, or
  ``VersionedCollapsingMergeTree(sign, revision)``). The net credit of a
  purchase is the sum of ``sign`` over its rows.

:class:`LateEventRow` is append-only: one per event that was too late.

All times are event-time microseconds since the Unix epoch (UTC), named
``*_us``; amounts are exact :class:`~decimal.Decimal`. Rows are values,
hashable by content: never mutate one (they are not ``frozen`` only because
frozen dataclasses cost more to build, once per event). ``to_dict`` gives a
JSON-safe dict (decimals as strings, tuples as lists) and ``row_from_dict``
reverses it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any, ClassVar, TypeVar


class _RowBase:
    __slots__ = ()
    table: ClassVar[str]
    _decimal_fields: ClassVar[frozenset[str]] = frozenset()
    _decimal_tuple_fields: ClassVar[frozenset[str]] = frozenset()
    _tuple_fields: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form with a ``"table"`` tag."""
        out: dict[str, Any] = {"table": self.table}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Decimal):
                value = str(value)
            elif isinstance(value, tuple):
                value = [str(v) if isinstance(v, Decimal) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            value = d[f.name]
            if f.name in cls._decimal_fields:
                value = Decimal(value)
            elif f.name in cls._decimal_tuple_fields:
                value = tuple(Decimal(v) for v in value)
            elif f.name in cls._tuple_fields:
                value = tuple(value)
            kwargs[f.name] = value
        return kwargs


@dataclass(slots=True, unsafe_hash=True)
class LoyaltyRow(_RowBase):
    """Snapshot of one user's loyalty state (key: brand_id, user_id)."""

    table: ClassVar[str] = "user_loyalty"
    _tuple_fields: ClassVar[frozenset[str]] = frozenset({"amount_currencies"})
    _decimal_tuple_fields: ClassVar[frozenset[str]] = frozenset({"amount_totals"})

    brand_id: str
    user_id: str
    version: int
    clicks: int
    shares: int
    orders: int
    #: Currencies, sorted; parallel to ``amount_totals`` (lifetime amount per currency).
    amount_currencies: tuple[str, ...]
    amount_totals: tuple[Decimal, ...]
    first_seen_us: int | None
    last_seen_us: int | None
    first_purchase_us: int | None
    second_purchase_us: int | None
    last_purchase_us: int | None
    repurchased: bool
    #: First touch ever: "kol" or "referral"; None when the user has had no touch.
    acquisition_kind: str | None
    acquisition_kol_id: str | None
    acquisition_referrer_id: str | None
    acquisition_share_id: str | None
    acquisition_event_id: str | None
    acquired_at_us: int | None
    tier: str
    is_koc: bool
    koc_since_us: int | None
    late_events: int

    def key(self) -> tuple[str, str]:
        """Sorting key in ClickHouse."""
        return (self.brand_id, self.user_id)


@dataclass(slots=True, unsafe_hash=True)
class ShareChainRow(_RowBase):
    """Snapshot of one share and its place in its chain (key: brand_id, share_id).

    ``depth`` is 0 for a root share (no parent); ``depth``, ``root_share_id``
    and ``root_kol_id`` are None while some ancestor is unknown (or the parents
    form a cycle), and ``resolved`` says which.
    """

    table: ClassVar[str] = "share_chains"

    brand_id: str
    share_id: str
    version: int
    event_id: str
    sharer_id: str
    parent_share_id: str | None
    kol_id: str | None
    shared_at_us: int
    depth: int | None
    root_share_id: str | None
    root_kol_id: str | None
    resolved: bool

    def key(self) -> tuple[str, str]:
        """Sorting key in ClickHouse."""
        return (self.brand_id, self.share_id)


@dataclass(slots=True, unsafe_hash=True)
class CreditRow(_RowBase):
    """One attribution outcome of one purchase, or its retraction (``sign=-1``).

    ``kind`` is "referral" (``sharer_id`` and the chain's KOL in ``kol_id``),
    "kol" (``kol_id``) or "organic" (no touch fields). Identity: brand_id,
    purchase_event_id, revision, sign.
    """

    table: ClassVar[str] = "purchase_credits"
    _decimal_fields: ClassVar[frozenset[str]] = frozenset({"amount"})

    brand_id: str
    purchase_event_id: str
    order_id: str
    buyer_id: str
    purchased_at_us: int
    amount: Decimal
    currency: str
    kind: str
    sharer_id: str | None
    kol_id: str | None
    share_id: str | None
    share_depth: int | None
    root_share_id: str | None
    touch_event_id: str | None
    touched_at_us: int | None
    revision: int
    sign: int

    def key(self) -> tuple[str, str, int, int]:
        """Identity of the row (a re-sent row has the same)."""
        return (self.brand_id, self.purchase_event_id, self.revision, self.sign)


@dataclass(slots=True, unsafe_hash=True)
class KocPromotionRow(_RowBase):
    """A user became a KOC at ``promoted_at_us``, with the evidence; or its retraction.

    ``promoted_at_us`` is the event time of the referred purchase at which the
    rule first held (``promoting_purchase_event_id``). ``buyer_ids`` are the
    distinct referred buyers within the KOC window ending then (sorted); the
    ``evidence_*`` tuples are parallel, one element per referred purchase in
    that window, in event-time order. Identity: brand_id, sharer_id, revision, sign.
    """

    table: ClassVar[str] = "koc_promotions"
    _tuple_fields: ClassVar[frozenset[str]] = frozenset(
        {
            "buyer_ids",
            "evidence_purchase_event_ids",
            "evidence_order_ids",
            "evidence_buyer_ids",
            "evidence_purchased_at_us",
        }
    )

    brand_id: str
    sharer_id: str
    promoted_at_us: int
    promoting_purchase_event_id: str
    buyer_ids: tuple[str, ...]
    evidence_purchase_event_ids: tuple[str, ...]
    evidence_order_ids: tuple[str, ...]
    evidence_buyer_ids: tuple[str, ...]
    evidence_purchased_at_us: tuple[int, ...]
    revision: int
    sign: int

    def key(self) -> tuple[str, str, int, int]:
        """Identity of the row (a re-sent row has the same)."""
        return (self.brand_id, self.sharer_id, self.revision, self.sign)


@dataclass(slots=True, unsafe_hash=True)
class SharerRow(_RowBase):
    """Snapshot of one referrer's referral record (key: brand_id, sharer_id).

    ``referred_orders`` counts purchases currently credited to this sharer;
    ``last_referred_purchase_us`` is what "active KOC" is derived from.
    """

    table: ClassVar[str] = "referrers"

    brand_id: str
    sharer_id: str
    version: int
    referred_orders: int
    last_referred_purchase_us: int | None
    is_koc: bool
    koc_since_us: int | None

    def key(self) -> tuple[str, str]:
        """Sorting key in ClickHouse."""
        return (self.brand_id, self.sharer_id)


@dataclass(slots=True, unsafe_hash=True)
class LateEventRow(_RowBase):
    """An input that arrived too late to take part in attribution or KOC promotion.

    It was still counted in lifetime state. ``processor`` and ``subject_id``
    say where (for example "user" and the user id); ``event_type`` is the event's type
    (or "referral_credit" for a credit reaching a sharer too late);
    ``watermark_us`` the watermark it was judged against.
    """

    table: ClassVar[str] = "late_events"

    brand_id: str
    processor: str
    subject_id: str
    event_id: str
    event_type: str
    occurred_at_us: int
    watermark_us: int
    reason: str


Row = LoyaltyRow | ShareChainRow | CreditRow | KocPromotionRow | SharerRow | LateEventRow
ROW_TYPES: tuple[type[Row], ...] = (
    LoyaltyRow,
    ShareChainRow,
    CreditRow,
    KocPromotionRow,
    SharerRow,
    LateEventRow,
)
_BY_TABLE: dict[str, type[Row]] = {cls.table: cls for cls in ROW_TYPES}

#: Reason given in :class:`LateEventRow` for an event beyond the allowed lateness.
TOO_LATE_FOR_ATTRIBUTION = "too_late_for_attribution"
#: Reason given when a referral credit reaches a sharer after its KOC history was dropped.
TOO_LATE_FOR_KOC = "too_late_for_koc"


def row_from_dict(d: dict[str, Any]) -> Row:
    """Rebuild a row from :meth:`to_dict` output (dispatching on ``"table"``)."""
    cls = _BY_TABLE[d["table"]]
    return cls(**cls._from_fields(d))


SnapshotT = TypeVar("SnapshotT", LoyaltyRow, ShareChainRow, SharerRow)


def latest_snapshots(
    rows: Iterable[Row], kind: type[SnapshotT]
) -> dict[tuple[str, str], SnapshotT]:
    """The highest-version snapshot of each key, as ClickHouse's FINAL would see it."""
    latest: dict[tuple[str, str], SnapshotT] = {}
    for row in rows:
        if isinstance(row, kind):
            k = row.key()
            cur = latest.get(k)
            if cur is None or row.version > cur.version:
                latest[k] = row
    return latest


SignedT = TypeVar("SignedT", CreditRow, KocPromotionRow)


def net_outcomes(rows: Iterable[Row], kind: type[SignedT]) -> Counter[SignedT]:
    """Sum of ``sign`` per outcome (row with revision and sign blanked), zero sums removed.

    Rows with the same identity (:meth:`CreditRow.key`) are counted once, as a
    deduplicating table would.
    """
    seen: set[tuple[str, str, int, int]] = set()
    total: Counter[SignedT] = Counter()
    for row in rows:
        if isinstance(row, kind):
            ident = row.key()
            if ident in seen:
                continue
            seen.add(ident)
            total[_blank(row)] += row.sign
    return Counter({k: v for k, v in total.items() if v != 0})


def _blank(row: SignedT) -> SignedT:
    return replace(row, revision=0, sign=0)


def coalesce_snapshots(rows: Iterable[Row]) -> list[Row]:
    """Drop snapshot rows superseded by a later version of the same key in ``rows``.

    For a sink batching rows: keeps every signed and late row, and the newest
    snapshot per key and table, in the original order.
    """
    materialised = list(rows)
    newest: dict[tuple[str, tuple[str, str]], int] = {}
    for row in materialised:
        if isinstance(row, LoyaltyRow | ShareChainRow | SharerRow):
            k = (row.table, row.key())
            if row.version > newest.get(k, -1):
                newest[k] = row.version
    return [
        row
        for row in materialised
        if not isinstance(row, LoyaltyRow | ShareChainRow | SharerRow)
        or newest[(row.table, row.key())] == row.version
    ]
