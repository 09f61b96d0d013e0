"""The checked-in JSON Schemas are generated from the models and must match them."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.contract.events import event_json_schemas

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "v1"


def test_checked_in_schemas_match_the_models() -> None:
    generated = event_json_schemas()
    on_disk = {p.name for p in SCHEMAS.glob("*.json")}
    assert on_disk == set(generated), "run `siyu schemas` to regenerate schemas/v1"
    for name, schema in generated.items():
        assert json.loads((SCHEMAS / name).read_text("utf-8")) == schema, (
            f"schemas/v1/{name} is stale: run `siyu schemas`"
        )


def test_schemas_require_the_contract_fields() -> None:
    purchase = event_json_schemas()["purchase.schema.json"]
    assert {
        "event_id",
        "brand_id",
        "user_id",
        "occurred_at",
        "order_id",
        "amount",
        "currency",
        "type",
        "schema_version",
        "channel",
    } <= set(purchase["required"])
    assert purchase["additionalProperties"] is False
