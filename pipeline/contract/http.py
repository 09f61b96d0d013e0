"""The collector's response bodies.

The handlers build every body from these models, and the OpenAPI description
(``schemas/openapi/collector.json``) is generated from them, so the two cannot disagree.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.contract.events import RejectReason


class EventResult(BaseModel):
    """What became of one event of the request."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="Position in the request (0 for a single-event body).")
    event_id: str | None = Field(
        description="The event's event_id when it could be read, else null."
    )
    status: Literal["accepted", "rejected"] = Field(
        description="accepted: confirmed by Kafka; rejected: invalid, see reason."
    )
    reason: RejectReason | None = Field(
        default=None, description="Why it was rejected (the dead-letter reasons)."
    )
    detail: str | None = Field(default=None, description="Which field, what was wrong.")


class IngestResponse(BaseModel):
    """The answer to a request whose events were all dealt with (status 200)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        description="Identifies the request; its rejected events are dead-lettered with "
        "source_topic 'collector' and this number as source_offset."
    )
    received_at: dt.datetime = Field(description="When the collector received the request.")
    accepted: int = Field(description="Events confirmed by Kafka.")
    rejected: int = Field(description="Events rejected; each is in `results` with its reason.")
    results: list[EventResult] = Field(description="One entry per event, in request order.")


class ErrorCode(StrEnum):
    """Machine-readable reason a request was refused as a whole."""

    UNAUTHORIZED = "unauthorized"
    WRONG_BRAND = "wrong_brand"
    MALFORMED_JSON = "malformed_json"
    MALFORMED_BODY = "malformed_body"
    BODY_TOO_LARGE = "body_too_large"
    TOO_MANY_EVENTS = "too_many_events"
    BUSY = "busy"
    KAFKA_UNAVAILABLE = "kafka_unavailable"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"


class ErrorResponse(BaseModel):
    """A request refused as a whole: none of its events was accepted."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorCode = Field(description="Machine-readable reason.")
    message: str = Field(description="What happened and what to do, for people.")
    retry_after_s: int | None = Field(
        default=None,
        description="Set on 429 and 503 (also in the Retry-After header): retry the same "
        "request after this many seconds.",
    )


class Health(BaseModel):
    """Liveness: the process answers."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Readiness: Kafka answers and the events topic has a leader for every partition."""

    ready: bool
    detail: str = Field(description="Why not ready, or what was checked.")
