"""The demo's answers read from ClickHouse, and their comparison with the recomputation.

:func:`read_answers` asks the views of migration 0004 the questions of the cookbook
(docs/queries.md: ``top_kols_by_revenue``, ``koc_leaderboard``, ``loyalty_tiers``,
``funnel_by_channel``, ``dead_letters_by_reason``), for one brand, and returns them in the
shape of :class:`~pipeline.demo.answers.DemoAnswers`, so that :func:`compare_answers` can
hold them against what :func:`~pipeline.demo.answers.compute_answers` derives from the
generated events without Kafka, workers or ClickHouse. A KOL's clicks, a KOC's standing
and a KOL's orders come from different views; they are merged here in Python, which keeps
each query as plain as the cookbook's and runnable on ClickHouse 18.16 and current releases.

Values are converted in SQL to types both engines return alike (amounts as text, times as
epoch seconds), so the answers do not depend on the driver.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Protocol

from pipeline.demo.answers import (
    ChannelConversion,
    CreditMix,
    DemoAnswers,
    KocStanding,
    KolRevenue,
    ReasonCount,
    TierCount,
)
from pipeline.domain import LoyaltyTier
from pipeline.sink.clickhouse import check_identifier


class Client(Protocol):
    """What is used of clickhouse_driver.Client (tests pass a chdb-backed one)."""

    def execute(self, query: str, params: Any = None) -> Any: ...


# Each query reads views only; {db} is a checked identifier, every value a parameter.
EVENTS_BY_TYPE = """
SELECT toString(type) AS t, count() AS n
FROM {db}.events_unique
WHERE brand_id = %(brand)s
GROUP BY t
ORDER BY t
"""

#: Cookbook ``top_kols_by_revenue`` for one brand and currency, every KOL (no LIMIT).
KOL_REVENUE = """
SELECT kol_id, sum(attributed_orders) AS orders, toString(sum(attributed_amount)) AS revenue
FROM {db}.kol_revenue_minute
WHERE brand_id = %(brand)s AND currency = %(currency)s
GROUP BY kol_id
HAVING orders != 0 OR sum(attributed_amount) != 0
ORDER BY sum(attributed_amount) DESC, kol_id
"""

KOL_CLICKS = """
SELECT kol_id, sum(clicks) AS total_clicks
FROM {db}.kol_performance_minute
WHERE brand_id = %(brand)s
GROUP BY kol_id
HAVING total_clicks > 0
ORDER BY kol_id
"""

#: Orders credited to a KOL through share chains that started from the KOL's content.
KOL_VIA_SHARES = """
SELECT assumeNotNull(kol_id) AS kol, count() AS orders
FROM {db}.credits_current
WHERE brand_id = %(brand)s AND kind = 'referral' AND kol_id IS NOT NULL
GROUP BY kol
ORDER BY kol
"""

KOCS = """
SELECT user_id, toUInt32(assumeNotNull(koc_since_at)) AS since
FROM {db}.user_latest
WHERE brand_id = %(brand)s AND is_koc = 1 AND koc_since_at IS NOT NULL
ORDER BY user_id
"""

#: Cookbook ``koc_leaderboard`` for one brand and currency, every KOC (no LIMIT).
KOC_LEADERBOARD = """
SELECT
    assumeNotNull(sharer_id) AS koc_id,
    count() AS referred_orders,
    uniqExact(buyer_id) AS referred_buyers,
    toString(sum(amount)) AS referred_revenue
FROM {db}.credits_current
WHERE brand_id = %(brand)s
    AND currency = %(currency)s
    AND kind = 'referral'
    AND (brand_id, assumeNotNull(sharer_id)) IN (SELECT brand_id, sharer_id FROM {db}.kocs)
GROUP BY koc_id
ORDER BY sum(amount) DESC, koc_id
"""

#: Cookbook ``loyalty_tiers`` for one brand.
LOYALTY_TIERS = """
SELECT toString(tier) AS t, count() AS users
FROM {db}.user_latest
WHERE brand_id = %(brand)s
GROUP BY t
ORDER BY t
"""

#: Cookbook ``funnel_by_channel`` for one brand: clicks and purchases per channel.
FUNNEL_BY_CHANNEL = """
SELECT toString(channel) AS c, sum(clicks) AS total_clicks, sum(purchases) AS total_purchases
FROM {db}.funnel_minute
WHERE brand_id = %(brand)s
GROUP BY c
HAVING total_clicks > 0 OR total_purchases > 0
ORDER BY c
"""

CREDIT_MIX = """
SELECT toString(kind) AS k, count() AS orders, toString(sum(amount)) AS revenue
FROM {db}.credits_current
WHERE brand_id = %(brand)s AND currency = %(currency)s
GROUP BY k
ORDER BY k
"""

#: Cookbook ``dead_letters_by_reason`` for one brand.
DEAD_LETTERS_BY_REASON = """
SELECT toString(reason) AS r, count() AS inputs
FROM {db}.dead_letters_unique
WHERE brand_id = %(brand)s
GROUP BY r
ORDER BY r
"""


def read_answers(
    client: Client, database: str, brand_id: str, currency: str = "CNY"
) -> DemoAnswers:
    """The demo's answers for ``brand_id`` as ClickHouse's views give them, sorted as
    :class:`~pipeline.demo.answers.DemoAnswers` documents."""
    db = check_identifier(database)
    params = {"brand": brand_id, "currency": currency}

    def ask(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in client.execute(sql.format(db=db), params)]

    clicks = {k: int(n) for k, n in ask(KOL_CLICKS)}
    revenue = {k: (int(n), Decimal(a)) for k, n, a in ask(KOL_REVENUE)}
    via_shares = {k: int(n) for k, n in ask(KOL_VIA_SHARES)}
    top_kols = [
        KolRevenue(
            kol,
            clicks.get(kol, 0),
            revenue.get(kol, (0, Decimal(0)))[0],
            via_shares.get(kol, 0),
            revenue.get(kol, (0, Decimal(0)))[1],
        )
        for kol in set(clicks) | set(revenue)
    ]
    top_kols.sort(key=lambda r: (-r.revenue, -r.orders, -r.clicks, r.kol_id))

    standing = {k: (int(o), int(b), Decimal(a)) for k, o, b, a in ask(KOC_LEADERBOARD)}
    kocs = []
    for user_id, since in ask(KOCS):
        orders, buyers, amount = standing.get(user_id, (0, 0, Decimal(0)))
        kocs.append(
            KocStanding(
                user_id, dt.datetime.fromtimestamp(int(since), dt.UTC), buyers, orders, amount
            )
        )
    kocs.sort(key=lambda r: (-r.revenue, -r.orders, r.user_id))

    tiers = {t: int(n) for t, n in ask(LOYALTY_TIERS)}
    known = [t.value for t in LoyaltyTier]
    # A tier the code does not know would be a bug worth seeing: listed after the known ones.
    tier_counts = [TierCount(t, tiers.get(t, 0)) for t in known]
    tier_counts += [TierCount(t, n) for t, n in sorted(tiers.items()) if t not in known]

    return DemoAnswers(
        brand_id=brand_id,
        currency=currency,
        events_by_type=sorted((t, int(n)) for t, n in ask(EVENTS_BY_TYPE)),
        top_kols=top_kols,
        kocs=kocs,
        tiers=tier_counts,
        conversion=sorted(
            ChannelConversion(c, int(k), int(p)) for c, k, p in ask(FUNNEL_BY_CHANNEL)
        ),
        credit_mix=sorted(CreditMix(k, int(n), Decimal(a)) for k, n, a in ask(CREDIT_MIX)),
        dead_letters=sorted(ReasonCount(r, int(n)) for r, n in ask(DEAD_LETTERS_BY_REASON)),
    )


# -- comparison --------------------------------------------------------------------------------

#: How each answer is named when compared (the fields of DemoAnswers, in printing order).
ANSWER_TITLES = {
    "brand_id": "brand",
    "currency": "currency",
    "events_by_type": "events by type",
    "credit_mix": "where the orders came from",
    "top_kols": "top KOLs by attributed revenue",
    "kocs": "KOC leaderboard",
    "tiers": "loyalty tiers",
    "conversion": "conversion by channel",
    "dead_letters": "dead letters by reason",
}


@dataclass(frozen=True, slots=True)
class Comparison:
    """One answer held against its recomputation: the rows only one side has."""

    field: str
    rows: int
    only_clickhouse: list[Any]
    only_recomputed: list[Any]

    @property
    def agrees(self) -> bool:
        return not self.only_clickhouse and not self.only_recomputed


def compare_answers(got: DemoAnswers, expected: DemoAnswers) -> list[Comparison]:
    """Every answer of ``got`` (ClickHouse) against ``expected`` (recomputed), field by
    field, in :data:`ANSWER_TITLES` order. Lists must be equal, order included; where they
    hold the same rows in another order, both sides show them."""
    names = {f.name for f in fields(DemoAnswers)}
    assert names == set(ANSWER_TITLES), "ANSWER_TITLES must name every answer"
    out = []
    for name in ANSWER_TITLES:
        a, b = getattr(got, name), getattr(expected, name)
        if not isinstance(a, list):
            a, b = [a], [b]
        if a == b:
            out.append(Comparison(name, len(a), [], []))
            continue
        only_a = [r for r in a if r not in b]
        only_b = [r for r in b if r not in a]
        if not only_a and not only_b:  # same rows, another order (or other multiplicity)
            only_a, only_b = a, b
        out.append(Comparison(name, len(a), only_a, only_b))
    return out


def format_comparison(comparisons: list[Comparison], *, show: int = 3) -> str:
    """One line per answer, ``agree`` or ``DISAGREE: ...`` with the first differing rows,
    then the verdict."""
    width = max(len(t) for t in ANSWER_TITLES.values())
    lines = ["ClickHouse compared with the recomputation from the generated events:"]
    for c in comparisons:
        title = ANSWER_TITLES[c.field].ljust(width)
        if c.agrees:
            lines.append(f"  {title}  agree ({c.rows} row{'s' if c.rows != 1 else ''})")
            continue
        lines.append(
            f"  {title}  DISAGREE: {len(c.only_clickhouse)} row(s) only in ClickHouse, "
            f"{len(c.only_recomputed)} only in the recomputation"
        )
        for side, found in (("ClickHouse", c.only_clickhouse), ("recomputed", c.only_recomputed)):
            for row in found[:show]:
                lines.append(f"      {side}: {_show(row)}")
            if len(found) > show:
                lines.append(f"      {side}: ... and {len(found) - show} more")
    bad = [ANSWER_TITLES[c.field] for c in comparisons if not c.agrees]
    if bad:
        lines.append(
            f"DISAGREE: {len(bad)} of {len(comparisons)} answers differ ({', '.join(bad)})"
        )
    else:
        lines.append(f"agree: all {len(comparisons)} answers equal the recomputation")
    return "\n".join(lines) + "\n"


def _show(row: Any) -> str:
    if isinstance(row, tuple) and hasattr(row, "_asdict"):
        return ", ".join(f"{k}={_value(v)}" for k, v in row._asdict().items())
    return _value(row)


def _value(v: Any) -> str:
    if isinstance(v, dt.datetime):
        return v.isoformat()
    return str(v)
