"""Turn an engine's rows into the oracle's shape, to compare them."""

from __future__ import annotations

from typing import Any

from pipeline.domain import Engine
from tests.oracle import OracleResult


def _fields(row_dict: dict[str, Any], drop: set[str]) -> dict[str, Any]:
    return {k: v for k, v in row_dict.items() if k not in drop}


def engine_result(engine: Engine) -> OracleResult:
    """What ClickHouse would hold, in the oracle's shape (asserting net signs are 0 or 1)."""
    out = OracleResult()
    for key, row in engine.loyalty().items():
        d = _fields(row.__class__.to_dict(row), {"table", "brand_id", "user_id", "version"})
        d["amount_currencies"] = row.amount_currencies
        d["amount_totals"] = row.amount_totals
        out.loyalty[key] = d
    for key, chain in engine.share_chains().items():
        out.chains[key] = _fields(chain.to_dict(), {"table", "brand_id", "share_id", "version"})
    for credit, n in engine.net_credits().items():
        assert n == 1, (credit, n)
        key = (credit.brand_id, credit.purchase_event_id)
        assert key not in out.credits, f"two net credits for {key}"
        d = _fields(
            credit.to_dict(), {"table", "brand_id", "purchase_event_id", "revision", "sign"}
        )
        d["amount"] = credit.amount
        out.credits[key] = d
    for promo, n in engine.net_promotions().items():
        assert n == 1, (promo, n)
        key = (promo.brand_id, promo.sharer_id)
        assert key not in out.promotions, f"two net promotions for {key}"
        out.promotions[key] = {
            "promoted_at_us": promo.promoted_at_us,
            "promoting_purchase_event_id": promo.promoting_purchase_event_id,
            "buyer_ids": promo.buyer_ids,
            "evidence_purchase_event_ids": promo.evidence_purchase_event_ids,
            "evidence_order_ids": promo.evidence_order_ids,
            "evidence_buyer_ids": promo.evidence_buyer_ids,
            "evidence_purchased_at_us": promo.evidence_purchased_at_us,
        }
    for key, sharer in engine.sharers().items():
        if sharer.referred_orders == 0:
            assert sharer.last_referred_purchase_us is None and not sharer.is_koc
            continue
        out.sharers[key] = {
            "referred_orders": sharer.referred_orders,
            "last_referred_purchase_us": sharer.last_referred_purchase_us,
            "koc_since_us": sharer.koc_since_us,
        }
    return out


def assert_same(engine: Engine, expected: OracleResult) -> None:
    """Engine output equals the oracle's, area by area (clear diffs on failure)."""
    got = engine_result(engine)
    assert got.chains == expected.chains
    assert got.credits == expected.credits
    assert got.promotions == expected.promotions
    assert got.sharers == expected.sharers
    assert got.loyalty == expected.loyalty
