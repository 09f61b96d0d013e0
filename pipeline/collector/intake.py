"""A request body in, accepted events and per-event rejects out. Pure: no I/O, no clock.

The body is one event object or an envelope ``{"events": [...]}`` (the same shapes, and
the same validation, as a Kafka message: :mod:`pipeline.contract.events`). Problems with the body as
a whole (not JSON, not an envelope, too many events, another brand's events) refuse the
request: nothing of it is written. Problems with single events reject only those events.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.contract.events import (
    AnyEvent,
    Reject,
    not_after,
    validate_event,
)
from pipeline.contract.http import ErrorCode, EventResult


@dataclass(frozen=True, slots=True)
class Refusal:
    """The request as a whole is refused with ``status``; nothing of it is written."""

    status: int
    error: ErrorCode
    message: str


@dataclass(slots=True)
class Intake:
    """What a body held: the accepted events (stamped), the rejects, a result per event."""

    accepted: list[AnyEvent] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    results: list[EventResult] = field(default_factory=list)


def take_in(
    raw: bytes,
    brand: str,
    received_at: dt.datetime,
    max_events: int,
    max_ahead_s: float | None = None,
) -> Intake | Refusal:
    """Validate ``raw`` for a request authenticated as ``brand``.

    Accepted events get ``received_at`` (a client's own value is overwritten: the receive
    time is the collector's to say). An event naming another brand refuses the whole
    request with 403, so a key can never write, even partly, for a brand it does not own.
    With ``max_ahead_s``, an event that occurred more than that after ``received_at`` is
    rejected (``occurred_in_future``): the sender hears of its clock at once.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        return Refusal(400, ErrorCode.MALFORMED_JSON, f"the body is not valid JSON: {err}")
    items, single = _items(obj)
    if items is None:
        return Refusal(
            400,
            ErrorCode.MALFORMED_BODY,
            'send one event object or an envelope that is exactly {"events": [event, ...]}',
        )
    if len(items) > max_events:
        return Refusal(
            413,
            ErrorCode.TOO_MANY_EVENTS,
            f"{len(items)} events in one request, at most {max_events}: split the batch",
        )
    for i, item in enumerate(items):
        other = item.get("brand_id") if isinstance(item, dict) else None
        if isinstance(other, str) and other != brand:
            return Refusal(
                403,
                ErrorCode.WRONG_BRAND,
                f"event {i} has brand_id {other[:64]!r} but this API key writes only for "
                f"{brand!r}; nothing of this request was accepted",
            )
    intake = Intake()
    latest = None if max_ahead_s is None else not_after(received_at.timestamp(), max_ahead_s)
    for i, item in enumerate(items):
        payload = raw if single else orjson.dumps(item)
        result = validate_event(item, payload, None if single else i, latest)
        event_id = _event_id(item)
        if isinstance(result, Reject):
            intake.rejects.append(result)
            intake.results.append(
                EventResult(
                    index=i,
                    event_id=event_id,
                    status="rejected",
                    reason=result.reason,
                    detail=result.detail,
                )
            )
        else:
            intake.accepted.append(result.model_copy(update={"received_at": received_at}))
            intake.results.append(EventResult(index=i, event_id=event_id, status="accepted"))
    return intake


def _items(obj: Any) -> tuple[list[Any] | None, bool]:
    """The events of a body and whether it was a single event (not an envelope).

    An object with ``events`` and no ``type`` is an envelope, as :func:`decode_message`
    decides it for Kafka messages. A body that is not an object (an array of events, say)
    is neither, and gets None.
    """
    if not isinstance(obj, dict):
        return None, False
    if "events" in obj and "type" not in obj:
        events = obj["events"]
        if not isinstance(events, list) or len(obj) != 1:
            return None, False
        return events, False
    return [obj], True


def _event_id(item: Any) -> str | None:
    value = item.get("event_id") if isinstance(item, dict) else None
    return value[:128] if isinstance(value, str) else None
