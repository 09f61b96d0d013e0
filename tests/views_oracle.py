"""What every view of migration 0004 and every cookbook query (docs/queries.md) must return,
recomputed in plain Python from the distinct events and the batch oracle (tests/oracle.py).

Rows are compared in a canonical form (:func:`canonical`) so that a clickhouse-driver result
(datetimes, Decimals, ints), a chdb JSON result (strings, floats) and these expectations can
be compared with ``==``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.oracle import OracleResult
from tests.scenario import Event

QUERIES_MD = Path(__file__).resolve().parents[1] / "docs" / "queries.md"
_MINUTE_US = 60_000_000
_DAY_S = 86_400


def cookbook() -> dict[str, str]:
    """The cookbook's queries by name: each ``### `name` `` heading and its ```sql block."""
    text = QUERIES_MD.read_text("utf-8")
    found = re.findall(r"^### `(\w+)`\n.*?^```sql\n(.*?)^```", text, re.S | re.M)
    return {name: sql.strip() for name, sql in found}


def _us_to_text(us: int | None) -> str | None:
    if us is None:
        return None
    return dt.datetime.fromtimestamp(us // 1_000_000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def canonical(value: Any) -> Any:
    """One spelling per value: datetimes as ``YYYY-MM-DD hh:mm:ss`` (UTC), numbers as plain
    decimal text without trailing zeros, sequences as tuples, ``None`` kept."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return canonical(Decimal(repr(round(value, 6))))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "0") else text
    if isinstance(value, list | tuple):
        return tuple(canonical(v) for v in value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value):
        return canonical(Decimal(value))
    return value


def rows(values: Iterable[Iterable[Any]]) -> list[tuple[Any, ...]]:
    """Canonical rows, in the given order."""
    return [tuple(canonical(v) for v in row) for row in values]


def minute(us: int) -> str | None:
    return _us_to_text(us - us % _MINUTE_US)


def _round4(numerator: int, denominator: int) -> Decimal:
    return Decimal(0) if denominator == 0 else round(Decimal(numerator) / denominator, 4)


# -- views --------------------------------------------------------------------------------

#: The columns each view is compared on, and their order.
VIEW_COLUMNS: dict[str, list[str]] = {
    "user_latest": [
        "brand_id", "user_id", "clicks", "shares", "orders", "tier", "is_koc", "repurchased",
        "acquisition_kind", "acquisition_kol_id", "acquisition_referrer_id", "acquired_at",
        "koc_since_at", "last_purchase_at",
    ],
    "share_chains_latest": [
        "brand_id", "share_id", "sharer_id", "parent_share_id", "depth", "root_share_id",
        "root_kol_id", "resolved",
    ],
    "referrers_latest": [
        "brand_id", "sharer_id", "referred_orders", "last_referred_purchase_at", "is_koc",
        "koc_since_at",
    ],
    "credits_current": [
        "brand_id", "purchase_event_id", "order_id", "buyer_id", "purchased_at", "amount",
        "currency", "kind", "sharer_id", "kol_id", "share_id", "share_depth", "root_share_id",
        "touch_event_id", "touched_at",
    ],
    "kocs": ["brand_id", "sharer_id", "promoted_at", "promoting_purchase_event_id", "buyer_ids"],
    "kol_performance_minute": [
        "brand_id", "kol_id", "minute", "clicks", "unique_clickers", "shares", "purchases",
        "attributed_orders", "new_users", "new_kocs",
    ],
    "kol_revenue_minute": [
        "brand_id", "kol_id", "minute", "currency", "attributed_orders", "attributed_amount",
    ],
    "funnel_minute": [
        "brand_id", "channel", "minute", "clicks", "clickers", "shares", "purchases", "buyers",
        "attributed_purchases",
    ],
}  # fmt: skip

#: referrals holds retractions too: compared by its sums per purchase, which must net out.
REFERRALS_NET_SQL = (
    "SELECT brand_id, purchase_event_id, sharer_id, depth, kol_id, currency, "
    "sum(sign) AS n, sum(signed_amount) AS amount FROM referrals "
    "GROUP BY brand_id, purchase_event_id, sharer_id, depth, kol_id, currency "
    "HAVING n != 0 OR amount != 0"
)


def view_sql(view: str) -> str:
    return f"SELECT {', '.join(VIEW_COLUMNS[view])} FROM {view}"


def expected_views(events: list[Event], oracle: OracleResult) -> dict[str, set[tuple[Any, ...]]]:
    """Every view's rows (as canonical row sets), plus ``referrals`` netted per purchase."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    out["user_latest"] = [
        (b, u, r["clicks"], r["shares"], r["orders"], r["tier"], r["is_koc"], r["repurchased"],
         r["acquisition_kind"], r["acquisition_kol_id"], r["acquisition_referrer_id"],
         _us_to_text(r["acquired_at_us"]), _us_to_text(r["koc_since_us"]),
         _us_to_text(r["last_purchase_us"]))
        for (b, u), r in oracle.loyalty.items()
    ]  # fmt: skip
    out["share_chains_latest"] = [
        (b, s, r["sharer_id"], r["parent_share_id"], r["depth"], r["root_share_id"],
         r["root_kol_id"], r["resolved"])
        for (b, s), r in oracle.chains.items()
    ]  # fmt: skip
    out["referrers_latest"] = [
        (b, s, r["referred_orders"], _us_to_text(r["last_referred_purchase_us"]),
         r["koc_since_us"] is not None, _us_to_text(r["koc_since_us"]))
        for (b, s), r in oracle.sharers.items()
    ]  # fmt: skip
    credits = list(oracle.credits.items())
    out["credits_current"] = [
        (b, pid, c["order_id"], c["buyer_id"], _us_to_text(c["purchased_at_us"]), c["amount"],
         c["currency"], c["kind"], c["sharer_id"], c["kol_id"], c["share_id"], c["share_depth"],
         c["root_share_id"], c["touch_event_id"], _us_to_text(c["touched_at_us"]))
        for (b, pid), c in credits
    ]  # fmt: skip
    out["referrals_net"] = [
        (b, pid, c["sharer_id"], c["share_depth"], c["kol_id"], c["currency"], 1, c["amount"])
        for (b, pid), c in credits
        if c["kind"] == "referral"
    ]
    out["kocs"] = [
        (b, s, _us_to_text(p["promoted_at_us"]), p["promoting_purchase_event_id"], p["buyer_ids"])
        for (b, s), p in oracle.promotions.items()
    ]

    # KOL performance per minute, from its five sources.
    perf: dict[tuple[str, str, int], Counter[str]] = defaultdict(Counter)
    clickers: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for ev in events:
        if ev.kol_id is None or ev.type == "share":
            continue
        key = (ev.brand_id, ev.kol_id, _minute_us(ev.occurred_at))
        if ev.type == "click":
            perf[key]["clicks"] += 1
            clickers[key].add(ev.user_id)
        else:
            perf[key]["purchases"] += 1
    for (b, _), chain in oracle.chains.items():
        if chain["root_kol_id"] is not None:
            perf[(b, chain["root_kol_id"], _floor(chain["shared_at_us"]))]["shares"] += 1
    for (b, _), c in credits:
        if c["kind"] != "organic" and c["kol_id"] is not None:
            perf[(b, c["kol_id"], _floor(c["purchased_at_us"]))]["attributed_orders"] += 1
    for (b, _), u in oracle.loyalty.items():
        if u["acquisition_kol_id"] is not None:
            perf[(b, u["acquisition_kol_id"], _floor(u["acquired_at_us"]))]["new_users"] += 1
            if u["is_koc"]:
                perf[(b, u["acquisition_kol_id"], _floor(u["koc_since_us"]))]["new_kocs"] += 1
    out["kol_performance_minute"] = [
        (b, k, _us_to_text(m), n["clicks"], len(clickers[(b, k, m)]), n["shares"],
         n["purchases"], n["attributed_orders"], n["new_users"], n["new_kocs"])
        for (b, k, m), n in perf.items()
    ]  # fmt: skip

    revenue: dict[tuple[str, str, int, str], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for (b, _), c in credits:
        if c["kind"] != "organic" and c["kol_id"] is not None:
            acc = revenue[(b, c["kol_id"], _floor(c["purchased_at_us"]), c["currency"])]
            acc[0] += 1
            acc[1] += c["amount"]
    out["kol_revenue_minute"] = [
        (b, k, _us_to_text(m), cur, n, amount) for (b, k, m, cur), (n, amount) in revenue.items()
    ]

    attributed = {key for key, c in credits if c["kind"] != "organic"}
    funnel: dict[tuple[str, str, int], Counter[str]] = defaultdict(Counter)
    who: dict[tuple[str, str, int, str], set[str]] = defaultdict(set)
    for ev in events:
        key = (ev.brand_id, ev.channel, _minute_us(ev.occurred_at))
        funnel[key][ev.type] += 1
        who[(*key, ev.type)].add(ev.user_id)
        if ev.type == "purchase" and (ev.brand_id, ev.event_id) in attributed:
            funnel[key]["attributed"] += 1
    out["funnel_minute"] = [
        (b, ch, _us_to_text(m), n["click"], len(who[(b, ch, m, "click")]), n["share"],
         n["purchase"], len(who[(b, ch, m, "purchase")]), n["attributed"])
        for (b, ch, m), n in funnel.items()
    ]  # fmt: skip
    return {name: set(rows(values)) for name, values in out.items()}


def read_views(client: Any) -> dict[str, set[tuple[Any, ...]]]:
    """Every view's rows as :func:`expected_views` spells them (``client``: any
    clickhouse-driver-shaped client whose default database holds the views)."""
    got = {view: set(rows(client.execute(view_sql(view)))) for view in VIEW_COLUMNS}
    got["referrals_net"] = set(rows(client.execute(REFERRALS_NET_SQL)))
    return got


def assert_views_match(client: Any, events: list[Event], oracle: OracleResult) -> None:
    """Every view equals its recomputation, with a readable difference if not."""
    expected = expected_views(events, oracle)
    got = read_views(client)
    for view, rows_expected in expected.items():
        missing, extra = rows_expected - got[view], got[view] - rows_expected
        assert not missing and not extra, (
            f"{view}: {len(missing)} missing, e.g. {sorted(missing, key=str)[:3]}; "
            f"{len(extra)} unexpected, e.g. {sorted(extra, key=str)[:3]}"
        )


def _floor(us: int) -> int:
    return us - us % _MINUTE_US


def _minute_us(moment: dt.datetime) -> int:
    return _floor(int(moment.timestamp()) * 1_000_000)


# -- cookbook ------------------------------------------------------------------------------


def expected_cookbook(
    events: list[Event], oracle: OracleResult, dead_letter_reasons: Counter[str]
) -> dict[str, list[tuple[Any, ...]]]:
    """Each cookbook query's answer, in the query's row order (all of its columns, except
    ``last_seen`` of dead_letters_by_reason, which is wall time)."""
    credits = list(oracle.credits.items())
    out: dict[str, list[tuple[Any, ...]]] = {}

    kol_totals: dict[tuple[str, str, str], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for (b, _), c in credits:
        if c["kind"] != "organic" and c["kol_id"] is not None:
            acc = kol_totals[(b, c["currency"], c["kol_id"])]
            acc[0] += 1
            acc[1] += c["amount"]
    ranked = sorted(kol_totals.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[1][1], kv[0][2]))
    out["top_kols_by_revenue"] = _limit_by(
        [(b, cur, k, n, amount) for (b, cur, k), (n, amount) in ranked], 2, 10
    )

    kocs = set(oracle.promotions)
    board: dict[tuple[str, str, str], list[Any]] = defaultdict(lambda: [0, set(), Decimal(0)])
    for (b, _), c in credits:
        if c["kind"] == "referral" and (b, c["sharer_id"]) in kocs:
            acc = board[(b, c["currency"], c["sharer_id"])]
            acc[0] += 1
            acc[1].add(c["buyer_id"])
            acc[2] += c["amount"]
    ranked_kocs = sorted(board.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[1][2], kv[0][2]))
    out["koc_leaderboard"] = _limit_by(
        [(b, cur, s, n, len(buyers), amount) for (b, cur, s), (n, buyers, amount) in ranked_kocs],
        2,
        20,
    )

    tiers = Counter((b, u["tier"]) for (b, _), u in oracle.loyalty.items())
    out["loyalty_tiers"] = sorted((b, t, n) for (b, t), n in tiers.items())

    out["rfm_segments"] = _rfm(oracle)

    channels: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    attributed = {key for key, c in credits if c["kind"] != "organic"}
    for ev in events:
        channels[(ev.brand_id, ev.channel)][ev.type] += 1
        if ev.type == "purchase" and (ev.brand_id, ev.event_id) in attributed:
            channels[(ev.brand_id, ev.channel)]["attributed"] += 1
    out["funnel_by_channel"] = [
        (b, ch, n["click"], n["share"], n["purchase"], n["attributed"],
         _round4(n["purchase"], n["click"]))
        for (b, ch), n in sorted(channels.items())
    ]  # fmt: skip

    buyers: Counter[str] = Counter()
    repeat: Counter[str] = Counter()
    brands = sorted({b for b, _ in oracle.loyalty})
    for (b, _), u in oracle.loyalty.items():
        buyers[b] += u["orders"] > 0
        repeat[b] += bool(u["repurchased"])
    out["repurchase_rate"] = [
        (b, buyers[b], repeat[b], _round4(repeat[b], buyers[b])) for b in brands
    ]

    depths = Counter((b, c["depth"]) for (b, _), c in oracle.chains.items())
    out["share_depth_distribution"] = sorted(
        ((b, d, n) for (b, d), n in depths.items()),
        key=lambda r: (r[0], -1 if r[1] is None else r[1]),
    )

    out["dead_letters_by_reason"] = sorted(
        ((reason, n) for reason, n in dead_letter_reasons.items()), key=lambda r: (-r[1], r[0])
    )
    return {name: rows(values) for name, values in out.items()}


def _limit_by(ordered: list[tuple[Any, ...]], width: int, limit: int) -> list[tuple[Any, ...]]:
    """ClickHouse's ``LIMIT n BY`` the first ``width`` columns of already ordered rows."""
    seen: Counter[tuple[Any, ...]] = Counter()
    kept = []
    for row in ordered:
        seen[row[:width]] += 1
        if seen[row[:width]] <= limit:
            kept.append(row)
    return kept


def _rfm(oracle: OracleResult) -> list[tuple[Any, ...]]:
    buyers = [(b, u) for (b, _), u in oracle.loyalty.items() if u["orders"] > 0]
    ref: dict[str, int] = {}
    for b, u in buyers:
        ref[b] = max(ref.get(b, 0), u["last_purchase_us"] // 1_000_000)
    segments: Counter[tuple[str, str]] = Counter()
    monetary: Counter[tuple[str, str]] = Counter()
    for b, u in buyers:
        days = (ref[b] - u["last_purchase_us"] // 1_000_000) // _DAY_S
        totals = dict(zip(u["amount_currencies"], u["amount_totals"], strict=True))
        cny = totals.get("CNY", Decimal(0))
        r = 3 if days <= 7 else 2 if days <= 30 else 1
        f = 3 if u["orders"] >= 5 else 2 if u["orders"] >= 2 else 1
        m = 3 if cny >= 1000 else 2 if cny >= 200 else 1
        if r == 3 and f >= 2:
            segment = "champions"
        elif f == 3:
            segment = "loyal"
        elif r == 3:
            segment = "new"
        elif r == 1 and f >= 2:
            segment = "at_risk"
        elif r == 1:
            segment = "lost"
        else:
            segment = "needs_attention"
        segments[(b, segment)] += 1
        monetary[(b, segment)] += m
    return sorted((b, s, n, monetary[(b, s)]) for (b, s), n in segments.items())
