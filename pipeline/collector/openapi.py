"""The collector's OpenAPI 3.1 description, generated from the models the code uses.

Request schemas are the event contract's models (:mod:`pipeline.contract.events`), response schemas
the collector's (:mod:`pipeline.contract.http`); limits are the settings' defaults.
``siyu openapi`` writes ``schemas/openapi/collector.json`` and a test fails when the file
and this function disagree, so the description cannot drift from the code.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import models_json_schema

from pipeline.collector.server import EVENTS_PATH
from pipeline.contract.events import EVENT_MODELS, Envelope, RejectReason
from pipeline.contract.http import (
    ErrorCode,
    ErrorResponse,
    Health,
    IngestResponse,
    Readiness,
)
from pipeline.settings import Settings

#: Version of the HTTP API (not of the siyu package): bumped when the contract changes.
API_VERSION = "1.0.0"

#: Status codes ``POST /v1/events`` answers with, and the error codes each may carry.
EVENTS_ERRORS: dict[int, tuple[str, list[ErrorCode]]] = {
    400: (
        "The body is not JSON, or not an event object or an envelope. Nothing was accepted.",
        [ErrorCode.MALFORMED_JSON, ErrorCode.MALFORMED_BODY],
    ),
    401: (
        "Missing or unknown API key. Nothing was read or written.",
        [ErrorCode.UNAUTHORIZED],
    ),
    403: (
        "An event names another brand than the key's. Nothing was accepted.",
        [ErrorCode.WRONG_BRAND],
    ),
    405: ("Only POST is allowed.", [ErrorCode.METHOD_NOT_ALLOWED]),
    413: (
        "The body is over the byte limit, or carries more events than allowed. Nothing was "
        "accepted; split the batch.",
        [ErrorCode.BODY_TOO_LARGE, ErrorCode.TOO_MANY_EVENTS],
    ),
    429: (
        "The collector is at its limit of work in flight because Kafka is slow. Nothing was "
        "accepted; retry the same request after Retry-After seconds.",
        [ErrorCode.BUSY],
    ),
    503: (
        "Kafka did not confirm the events in time or is unreachable. None of them was "
        "accepted; retry the same request after Retry-After seconds. Some may have reached "
        "Kafka anyway: the pipeline drops the copies by event_id.",
        [ErrorCode.KAFKA_UNAVAILABLE],
    ),
}


def _schemas() -> dict[str, Any]:
    _, top = models_json_schema(
        [
            *[(model, "validation") for model in EVENT_MODELS],
            (Envelope, "validation"),
            (IngestResponse, "serialization"),
            (ErrorResponse, "serialization"),
            (Health, "serialization"),
            (Readiness, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = top["$defs"]
    return schemas


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI description of the collector, with the settings' default limits."""
    fields = Settings.model_fields
    max_body = fields["collector_max_body_bytes"].default
    max_events = fields["collector_max_events"].default
    port = fields["collector_port"].default
    retry_header = {
        "Retry-After": {
            "description": "Seconds to wait before retrying the same request.",
            "schema": {"type": "integer", "minimum": 1},
        }
    }
    responses: dict[str, Any] = {
        "200": {
            "description": "Every event was dealt with: the accepted ones are confirmed by "
            "Kafka (acks=all), each rejected one is listed with its reason and was sent to "
            "the dead-letter topic. Check `rejected`.",
            "content": _json("IngestResponse"),
        }
    }
    for status, (text, codes) in EVENTS_ERRORS.items():
        entry: dict[str, Any] = {
            "description": f"{text} Error codes: {', '.join(c.value for c in codes)}.",
            "content": _json("ErrorResponse"),
        }
        if status in (429, 503):
            entry["headers"] = retry_header
        if status == 401:
            entry["headers"] = {
                "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}
            }
        responses[str(status)] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "siyu collector",
            "version": API_VERSION,
            "description": "The HTTP front door of siyu for brand apps: click, share and "
            "purchase events (the v1 event contract) in, Kafka out. See docs/collector.md.",
        },
        "servers": [{"url": f"http://127.0.0.1:{port}", "description": "local default"}],
        "security": [{"brandKey": []}],
        "paths": {
            EVENTS_PATH: {
                "post": {
                    "operationId": "postEvents",
                    "summary": "Send one event or a batch of events",
                    "description": (
                        "The body is one event object or an envelope "
                        '`{"events": [...]}`; at most '
                        f"{max_body} bytes (SIYU_COLLECTOR_MAX_BODY_BYTES) and {max_events} "
                        "events (SIYU_COLLECTOR_MAX_EVENTS) by default. Each event is "
                        "validated on its own; the collector stamps `received_at`. Every "
                        "event must carry the key's brand_id. Reject reasons: "
                        f"{', '.join(r.value for r in RejectReason)}."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        *[_ref(model.__name__) for model in EVENT_MODELS],
                                        _ref("Envelope"),
                                    ]
                                }
                            }
                        },
                    },
                    "responses": responses,
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": {"description": "Alive.", "content": _json("Health")}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "summary": "Readiness: Kafka answers and the topics are writable",
                    "security": [],
                    "responses": {
                        "200": {"description": "Ready.", "content": _json("Readiness")},
                        "503": {"description": "Not ready.", "content": _json("Readiness")},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (siyu_collector_*)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "brandKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The brand's API key: `Authorization: Bearer <key>`.",
                }
            },
            "schemas": _schemas(),
        },
    }


def openapi_text() -> str:
    """The document as checked in: sorted keys, two-space indent, trailing newline."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
