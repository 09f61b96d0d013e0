"""The answers ``make demo`` prints, recomputed from the events by the pure domain core.

The demo sends a generated brand (:mod:`pipeline.demo.brand`) through the collector,
Kafka and the workers into ClickHouse, then asks ClickHouse five questions. This
module answers the same questions without any of that machinery: it feeds the
events to the in-memory :class:`~pipeline.domain.Engine` (the same processors the
workers run) and reads its rows the way ClickHouse would (latest snapshots, signed
credits netted). Agreement between the two is the demo's proof that the pipeline
lost nothing and counted nothing twice.

Every answer is a list of plain tuples (named, so they read well, but equal to plain
tuples), sorted in a documented order, with exact :class:`~decimal.Decimal`
amounts, so a test can compare it with rows read back from ClickHouse.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from pipeline.contract.events import AnyEvent, ClickEvent, PurchaseEvent, decode_message
from pipeline.domain import DomainConfig, Engine, LoyaltyTier, from_us

Event = AnyEvent

#: Events fed to the engine between watermark advances (a worker's envelope).
FEED_BATCH = 500


class KolRevenue(NamedTuple):
    """A KOL's clicks and the orders credited to them.

    ``clicks``: click events carrying the KOL's id. ``orders`` / ``revenue``: purchases
    whose net credit names the KOL, directly (kind ``kol``) or as the root KOL of the
    share chain that referred the buyer (kind ``referral``); ``via_shares`` counts the
    latter.
    """

    kol_id: str
    clicks: int
    orders: int
    via_shares: int
    revenue: Decimal


class KocStanding(NamedTuple):
    """A KOC: since when, and what their shares brought (net referral credits)."""

    user_id: str
    koc_since: dt.datetime
    buyers: int
    orders: int
    revenue: Decimal


class TierCount(NamedTuple):
    """Users whose latest loyalty snapshot is in ``tier``."""

    tier: str
    users: int


class ChannelConversion(NamedTuple):
    """Click and purchase events of one channel (each event once)."""

    channel: str
    clicks: int
    purchases: int


class CreditMix(NamedTuple):
    """Orders and revenue by credit kind (kol, referral, organic)."""

    kind: str
    orders: int
    revenue: Decimal


class ReasonCount(NamedTuple):
    """Rejected inputs with one reason."""

    reason: str
    inputs: int


@dataclass(frozen=True, slots=True)
class DemoAnswers:
    """What the demo prints. Amounts are in ``currency``; lists are sorted as documented.

    - ``events_by_type``: (type, events), by type;
    - ``top_kols``: every KOL with clicks or credits, by revenue, orders, clicks
      (descending), then KOL id;
    - ``kocs``: every KOC, by revenue, orders (descending), then user id;
    - ``tiers``: all five tiers in :class:`~pipeline.domain.LoyaltyTier` order, zeros
      included;
    - ``conversion``: by channel name;
    - ``credit_mix``: by kind;
    - ``dead_letters``: by reason.
    """

    brand_id: str
    currency: str
    events_by_type: list[tuple[str, int]]
    top_kols: list[KolRevenue]
    kocs: list[KocStanding]
    tiers: list[TierCount]
    conversion: list[ChannelConversion]
    credit_mix: list[CreditMix]
    dead_letters: list[ReasonCount]


def unique_in_time_order(events: Iterable[Event]) -> list[Event]:
    """Each ``(brand_id, event_id)`` once (the first seen), in event-time order.

    What ingest's dedup leaves; the order makes the engine's run deterministic.
    """
    unique: dict[tuple[str, str], Event] = {}
    for event in events:
        unique.setdefault((event.brand_id, event.event_id), event)
    return sorted(unique.values(), key=lambda e: (e.occurred_at, e.event_id))


def run_domain(events: Iterable[Event], config: DomainConfig | None = None) -> Engine:
    """The domain core's rows for ``events`` (deduplicated, in event-time order), finished."""
    engine = Engine(config)
    engine.feed(unique_in_time_order(events), batch_size=FEED_BATCH)
    engine.finish()
    return engine


def dead_letters_by_reason(payloads: Iterable[bytes]) -> list[ReasonCount]:
    """Rejects by reason when each payload is sent as a message of its own."""
    reasons: Counter[str] = Counter()
    for payload in payloads:
        for reject in decode_message(payload).rejects:
            reasons[reject.reason.value] += 1
    return [ReasonCount(r, n) for r, n in sorted(reasons.items())]


def compute_answers(
    events: Iterable[Event],
    malformed: Iterable[bytes] = (),
    *,
    currency: str = "CNY",
    config: DomainConfig | None = None,
) -> DemoAnswers:
    """Recompute the demo's answers for one brand's ``events`` (duplicates allowed).

    ``malformed``: the raw payloads sent besides the events, each as its own message.
    Raises ValueError for events of several brands or purchases in another currency
    (the sums would mean nothing).
    """
    unique = unique_in_time_order(events)
    brands = {e.brand_id for e in unique}
    if len(brands) > 1:
        raise ValueError(f"demo answers are for one brand, got {sorted(brands)}")
    other = sorted({e.currency for e in unique if isinstance(e, PurchaseEvent)} - {currency})
    if other:
        raise ValueError(f"demo answers sum amounts in {currency}, got purchases in {other}")
    engine = run_domain(unique, config)
    return answers_from(engine, unique, dead_letters_by_reason(malformed), currency=currency)


def answers_from(
    engine: Engine,
    events: Sequence[Event],
    dead_letters: list[ReasonCount],
    *,
    currency: str = "CNY",
) -> DemoAnswers:
    """Read the answers off a finished engine that was fed ``events`` (each once)."""
    by_type = Counter(e.type for e in events)
    clicks = Counter(e.channel for e in events if isinstance(e, ClickEvent))
    purchases = Counter(e.channel for e in events if isinstance(e, PurchaseEvent))
    kol_clicks = Counter(e.kol_id for e in events if isinstance(e, ClickEvent) and e.kol_id)

    kol_orders: Counter[str] = Counter()
    kol_via_shares: Counter[str] = Counter()
    kol_revenue: defaultdict[str, Decimal] = defaultdict(Decimal)
    mix_orders: Counter[str] = Counter()
    mix_revenue: defaultdict[str, Decimal] = defaultdict(Decimal)
    referred_buyers: defaultdict[str, set[str]] = defaultdict(set)
    referred_orders: Counter[str] = Counter()
    referred_revenue: defaultdict[str, Decimal] = defaultdict(Decimal)
    # net_credits(): each outcome with its net sign (retractions already subtracted).
    for credit, net in engine.net_credits().items():
        mix_orders[credit.kind] += net
        mix_revenue[credit.kind] += credit.amount * net
        if credit.kol_id is not None:
            kol_orders[credit.kol_id] += net
            kol_revenue[credit.kol_id] += credit.amount * net
            if credit.kind == "referral":
                kol_via_shares[credit.kol_id] += net
        if credit.kind == "referral" and credit.sharer_id is not None:
            referred_orders[credit.sharer_id] += net
            referred_revenue[credit.sharer_id] += credit.amount * net
            referred_buyers[credit.sharer_id].add(credit.buyer_id)

    top_kols = [
        KolRevenue(k, kol_clicks[k], kol_orders[k], kol_via_shares[k], kol_revenue[k])
        for k in set(kol_clicks) | set(kol_orders)
    ]
    top_kols.sort(key=lambda r: (-r.revenue, -r.orders, -r.clicks, r.kol_id))

    kocs = [
        KocStanding(
            user_id,
            from_us(row.koc_since_us),
            len(referred_buyers[user_id]),
            referred_orders[user_id],
            referred_revenue[user_id],
        )
        for (_, user_id), row in engine.loyalty().items()
        if row.is_koc and row.koc_since_us is not None
    ]
    kocs.sort(key=lambda r: (-r.revenue, -r.orders, r.user_id))

    tier_counts = Counter(row.tier for row in engine.loyalty().values())
    brand_ids = {e.brand_id for e in events}
    return DemoAnswers(
        brand_id=brand_ids.pop() if len(brand_ids) == 1 else "",
        currency=currency,
        events_by_type=sorted(by_type.items()),
        top_kols=top_kols,
        kocs=kocs,
        tiers=[TierCount(t.value, tier_counts[t.value]) for t in LoyaltyTier],
        conversion=[
            ChannelConversion(c, clicks[c], purchases[c])
            for c in sorted(set(clicks) | set(purchases))
        ],
        credit_mix=[CreditMix(k, mix_orders[k], mix_revenue[k]) for k in sorted(mix_orders)],
        dead_letters=dead_letters,
    )


# -- rendering ---------------------------------------------------------------

#: Times are shown in the brand's local time.
LOCAL_TZ = dt.timezone(dt.timedelta(hours=8), "UTC+8")


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A titled text table; the first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        parts = [first.ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)
        ]
        return "  " + "  ".join(parts).rstrip()

    out = [title, line(headers), "  " + "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows] if rows else ["  (none)"]
    return out


def _money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def format_answers(answers: DemoAnswers, *, top: int = 10) -> str:
    """The answers as text tables for a terminal (``top`` rows of the rankings)."""
    cur = answers.currency
    total_events = sum(n for _, n in answers.events_by_type)
    lines = [
        f"brand {answers.brand_id}: {total_events:,} events ("
        + ", ".join(f"{n:,} {t}s" for t, n in answers.events_by_type)
        + ")",
        "",
    ]
    total_orders = sum(m.orders for m in answers.credit_mix)
    lines += _table(
        f"Where the orders came from ({cur})",
        ["credit", "orders", "share", "revenue"],
        [
            [m.kind, f"{m.orders:,}", _pct(m.orders, total_orders), _money(m.revenue)]
            for m in answers.credit_mix
        ],
    )
    lines.append("")
    shown = answers.top_kols[:top]
    lines += _table(
        f"Top {len(shown)} of {len(answers.top_kols)} KOLs by attributed revenue ({cur})",
        ["kol", "clicks", "orders", "via shares", "revenue"],
        [
            [k.kol_id, f"{k.clicks:,}", f"{k.orders:,}", f"{k.via_shares:,}", _money(k.revenue)]
            for k in shown
        ],
    )
    lines.append("")
    shown_kocs = answers.kocs[:top]
    lines += _table(
        f"KOC leaderboard: top {len(shown_kocs)} of {len(answers.kocs)} KOCs ({cur})",
        ["koc", "since (UTC+8)", "buyers", "orders", "revenue"],
        [
            [
                k.user_id,
                f"{k.koc_since.astimezone(LOCAL_TZ):%Y-%m-%d %H:%M}",
                f"{k.buyers:,}",
                f"{k.orders:,}",
                _money(k.revenue),
            ]
            for k in shown_kocs
        ],
    )
    lines.append("")
    total_users = sum(t.users for t in answers.tiers)
    lines += _table(
        "Loyalty tiers",
        ["tier", "users", "share"],
        [[t.tier, f"{t.users:,}", _pct(t.users, total_users)] for t in answers.tiers],
    )
    lines.append("")
    lines += _table(
        "Conversion by channel (purchases per click)",
        ["channel", "clicks", "purchases", "conversion"],
        [
            [c.channel, f"{c.clicks:,}", f"{c.purchases:,}", _pct(c.purchases, c.clicks)]
            for c in answers.conversion
        ],
    )
    lines.append("")
    lines += _table(
        "Dead letters by reason",
        ["reason", "inputs"],
        [[d.reason, f"{d.inputs:,}"] for d in answers.dead_letters],
    )
    return "\n".join(lines) + "\n"
