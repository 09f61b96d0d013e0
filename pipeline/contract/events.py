"""The v1 event contract: Pydantic models are the single source of truth.

A Kafka message (or an HTTP body) carries either one event object or an
envelope ``{"events": [...]}`` of many, so per-message costs are paid once per
batch. :func:`decode_message` turns raw bytes into valid events and rejects;
a reject keeps the exact bytes it came from and a machine-readable reason, so
nothing bad is ever dropped silently and nothing bad takes good events down.

The JSON Schemas under ``schemas/v1/`` are generated from these models
(``siyu schemas``) and a test fails when they disagree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeGuard, get_args

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

SCHEMA_VERSION = 1
#: Most events one envelope may carry; larger batches are split by the sender.
MAX_EVENTS_PER_ENVELOPE = 1000
#: Most keys in an event's ``properties`` object.
MAX_PROPERTIES = 32

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]
ShortName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
PropertyKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
PropertyValue = Annotated[str, StringConstraints(max_length=512)] | int | float | bool | None
#: Money: non-negative, at most 14 integer and 4 fractional digits (ClickHouse Decimal(18, 4)).
Amount = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]


class _EventBase(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    event_id: Id = Field(description="Unique per brand; the dedup key.")
    schema_version: Literal[1] = Field(description="Version of this contract.")
    brand_id: ShortName = Field(description="The brand that owns the event.")
    user_id: Id = Field(description="Brand-scoped pseudonymous user id.")
    occurred_at: AwareDatetime = Field(
        description="Event time, RFC 3339 with an offset (for example 2026-11-23T10:00:00+08:00)."
    )
    channel: ShortName = Field(
        description="Where the event happened (wechat_group, mini_program, app, kol_post, ...)."
    )
    kol_id: Id | None = Field(
        default=None, description="Set when traffic came from a KOL's content."
    )
    campaign_id: Id | None = Field(default=None, description="Marketing campaign, if any.")
    properties: dict[PropertyKey, PropertyValue] | None = Field(
        default=None,
        max_length=MAX_PROPERTIES,
        description="A small object of scalar values for brand-specific context.",
    )
    received_at: AwareDatetime | None = Field(
        default=None, description="Stamped by the collector when it received the event."
    )

    @property
    def occurred_ts(self) -> float:
        """Event time as POSIX seconds."""
        return self.occurred_at.timestamp()


class ClickEvent(_EventBase):
    """A user opened content: a KOL post, a product page, a share link."""

    type: Literal["click"]
    share_id: Id | None = Field(
        default=None, description="Set when the click came through a share link."
    )
    target_id: Id | None = Field(
        default=None, description="What was clicked (product, page, post)."
    )


class ShareEvent(_EventBase):
    """A user shared content; ``share_id`` is the new share's id."""

    type: Literal["share"]
    share_id: Id = Field(description="New id of this share.")
    parent_share_id: Id | None = Field(
        default=None, description="Set when this is a re-share of another share."
    )
    target_id: Id | None = Field(default=None, description="What was shared.")


class PurchaseEvent(_EventBase):
    """A user paid for an order."""

    type: Literal["purchase"]
    order_id: Id = Field(description="The brand's order id.")
    amount: Amount = Field(description="Order amount in `currency`, >= 0.")
    currency: Currency = Field(description="ISO 4217 code, for example CNY.")
    share_id: Id | None = Field(
        default=None, description="Set when checkout went through a share link."
    )


#: Every event type of the contract, spelled once: the registry of event types. A new type
#: is a model above, added here; everything else that handles every type (validation, the
#: JSON Schemas, the domain's dispatch, the ``events`` table's row) reads it from here.
AnyEvent = ClickEvent | ShareEvent | PurchaseEvent
#: The event models, in the registry's order.
EVENT_MODELS: tuple[type[AnyEvent], ...] = get_args(AnyEvent)
#: Each event model by its ``type`` tag.
EVENT_TYPES: dict[str, type[AnyEvent]] = {
    model.model_fields["type"].annotation.__args__[0]: model  # type: ignore[union-attr]
    for model in EVENT_MODELS
}
Event = Annotated[AnyEvent, Field(discriminator="type")]


def is_event(value: object) -> TypeGuard[AnyEvent]:
    """Whether ``value`` is an event of the contract (not, say, a message between agents)."""
    return isinstance(value, EVENT_MODELS)


# mypy's incremental runs (a warm cache, after this module changed) reject Annotated unions
# here with arg-type, while fresh runs accept them: ignore that, and that it may not fire.
_event_adapter: TypeAdapter[AnyEvent] = TypeAdapter(Event)  # type: ignore[arg-type,unused-ignore]
_TYPE_NAMES = list(EVENT_TYPES)
#: "click, share or purchase": the types, as an error message names them.
_TYPES_TEXT = ", ".join(_TYPE_NAMES[:-1]) + " or " + _TYPE_NAMES[-1]


class Envelope(BaseModel):
    """Many events in one message; each element is validated on its own."""

    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(max_length=MAX_EVENTS_PER_ENVELOPE)


class RejectReason(StrEnum):
    """Machine-readable reasons an input is dead-lettered."""

    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    SCHEMA_VIOLATION = "schema_violation"
    ENVELOPE_TOO_LARGE = "envelope_too_large"
    OCCURRED_IN_FUTURE = "occurred_in_future"
    PROCESSING_ERROR = "processing_error"


@dataclass(frozen=True, slots=True)
class Reject:
    """One input that could not be accepted.

    ``payload`` is the exact bytes of the message, or for one bad element of an
    envelope, that element serialised on its own; ``index`` says which element.
    """

    reason: RejectReason
    detail: str
    payload: bytes
    index: int | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one message decoded to: the valid events and the rejects, in order."""

    events: list[AnyEvent]
    rejects: list[Reject]


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False, include_input=False)[:5]:
        loc = ".".join(str(p) for p in e["loc"]) or "<event>"
        parts.append(f"{loc}: {e['msg']}")
    more = err.error_count() - len(parts)
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


def validate_event(
    obj: Any, payload: bytes, index: int | None = None, latest: dt.datetime | None = None
) -> AnyEvent | Reject:
    """Validate one decoded JSON value as an event, or say precisely why not.

    ``latest``: the latest ``occurred_at`` accepted (see :func:`not_after`); None: any.
    """
    if not isinstance(obj, dict):
        return Reject(
            RejectReason.NOT_AN_OBJECT,
            f"expected a JSON object, got {type(obj).__name__}",
            payload,
            index,
        )
    try:
        event = _event_adapter.validate_python(obj)
    except ValidationError as err:
        etype = obj.get("type")
        if etype not in EVENT_TYPES:
            return Reject(
                RejectReason.UNKNOWN_TYPE,
                f"type must be {_TYPES_TEXT}, got {etype!r}",
                payload,
                index,
            )
        if obj.get("schema_version") != SCHEMA_VERSION:
            return Reject(
                RejectReason.UNSUPPORTED_SCHEMA_VERSION,
                f"schema_version must be {SCHEMA_VERSION}, got {obj.get('schema_version')!r}",
                payload,
                index,
            )
        return Reject(RejectReason.SCHEMA_VIOLATION, _describe(err), payload, index)
    return _in_time(event, payload, index, latest)


def not_after(sent_at_s: float | None, max_ahead_s: float) -> dt.datetime | None:
    """The latest event time accepted in input sent at ``sent_at_s`` (POSIX seconds; None,
    <= 0 or past what a datetime holds: unknown, no bound).

    An event that happened after it was sent is a clock running ahead: a device set to the
    wrong time, local time labelled UTC. Accepted, it would move the watermark ahead by as
    much, and every correct event would look that much later. ``max_ahead_s`` tolerates
    clocks that are a little off. The send time is the Kafka message's timestamp or the
    collector's receive time, both stored with the input, so a replay decides the same.
    """
    if sent_at_s is None or sent_at_s <= 0:
        return None
    try:
        return dt.datetime.fromtimestamp(sent_at_s + max_ahead_s, dt.UTC)
    except (OverflowError, ValueError, OSError):  # a producer's timestamp beyond year 9999
        return None


def _in_time(
    event: AnyEvent,
    payload: bytes,
    index: int | None,
    latest: dt.datetime | None,
) -> AnyEvent | Reject:
    if latest is None or event.occurred_at <= latest:
        return event
    return Reject(
        RejectReason.OCCURRED_IN_FUTURE,
        f"occurred_at {event.occurred_at.isoformat()} is after {latest.isoformat()}, the "
        "time it was sent plus the tolerated clock skew: check the sender's clock",
        payload,
        index,
    )


def decode_message(raw: bytes, latest: dt.datetime | None = None) -> Decoded:
    """Decode one Kafka message or HTTP body: one event or an envelope of events.

    ``latest``: the latest ``occurred_at`` accepted (:func:`not_after`); None: any.
    Never raises for bad input: every problem becomes a :class:`Reject`.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        return Decoded([], [Reject(RejectReason.INVALID_JSON, str(err), raw)])
    if isinstance(obj, dict) and "events" in obj and "type" not in obj:
        items = obj["events"]
        if not isinstance(items, list) or len(obj) != 1:
            return Decoded(
                [],
                [
                    Reject(
                        RejectReason.SCHEMA_VIOLATION,
                        'an envelope is exactly {"events": [event, ...]}',
                        raw,
                    )
                ],
            )
        if len(items) > MAX_EVENTS_PER_ENVELOPE:
            return Decoded(
                [],
                [
                    Reject(
                        RejectReason.ENVELOPE_TOO_LARGE,
                        f"{len(items)} events, at most {MAX_EVENTS_PER_ENVELOPE}",
                        raw,
                    )
                ],
            )
        events: list[AnyEvent] = []
        rejects: list[Reject] = []
        for i, item in enumerate(items):
            try:
                ev = _event_adapter.validate_python(item)
            except ValidationError:
                rejects.append(_as_reject(validate_event(item, orjson.dumps(item), i)))
                continue
            if latest is not None and ev.occurred_at > latest:
                rejects.append(_as_reject(_in_time(ev, orjson.dumps(item), i, latest)))
                continue
            events.append(ev)
        return Decoded(events, rejects)
    result = validate_event(obj, raw, None, latest)
    if isinstance(result, Reject):
        return Decoded([], [result])
    return Decoded([result], [])


def _as_reject(value: object) -> Reject:
    assert isinstance(value, Reject)
    return value


def encode_event(event: AnyEvent) -> bytes:
    """Serialise an event to the contract's JSON (None fields omitted)."""
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)


def encode_envelope(events: list[AnyEvent]) -> bytes:
    """Serialise events as one envelope message."""
    return b'{"events":[' + b",".join(encode_event(e) for e in events) + b"]}"


def event_json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the v1 contract, by file name under ``schemas/v1/``."""
    schemas: dict[str, dict[str, Any]] = {}
    for name, model in EVENT_TYPES.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://siyu.dev/schemas/v1/{name}.schema.json"
        schemas[f"{name}.schema.json"] = schema
    env = Envelope.model_json_schema()
    env["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    env["$id"] = "https://siyu.dev/schemas/v1/envelope.schema.json"
    schemas["envelope.schema.json"] = env
    return schemas


def utc_now() -> dt.datetime:
    """Wall-clock now, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)
