"""The checked-in OpenAPI description is generated from the code and must match it."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.collector.openapi import EVENTS_ERRORS, openapi_document, openapi_text
from pipeline.collector.server import EVENTS_PATH
from pipeline.contract.events import event_json_schemas
from pipeline.contract.http import ErrorCode

OPENAPI = Path(__file__).resolve().parents[3] / "schemas" / "openapi" / "collector.json"


def test_checked_in_openapi_matches_the_code() -> None:
    assert OPENAPI.read_text("utf-8") == openapi_text(), (
        "schemas/openapi/collector.json is stale: run `siyu openapi`"
    )


def test_every_error_code_is_documented_once() -> None:
    documented = [c for _, codes in EVENTS_ERRORS.values() for c in codes]
    assert sorted(documented) == sorted(c for c in ErrorCode if c is not ErrorCode.NOT_FOUND)


def test_request_schemas_are_the_event_contract() -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    contract = event_json_schemas()
    for name, model in (("click", "ClickEvent"), ("purchase", "PurchaseEvent")):
        expected = {k: v for k, v in contract[f"{name}.schema.json"].items() if k[0] != "$"}
        assert schemas[model]["properties"] == expected["properties"]
        assert schemas[model]["required"] == expected["required"]
    post = doc["paths"][EVENTS_PATH]["post"]
    assert set(post["responses"]) == {"200"} | {str(s) for s in EVENTS_ERRORS}
    for status in ("429", "503"):
        assert "Retry-After" in post["responses"][status]["headers"]
    json.dumps(doc)  # serialisable as is
