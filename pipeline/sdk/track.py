"""Typed builders of v1 events: keyword arguments in, a validated event out.

An invalid event raises :class:`InvalidEvent` here, in the caller's code, with the same
message the pipeline would have put on the dead letter, instead of being sent and rejected
downstream where the caller no longer looks.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from pipeline.contract.events import (
    SCHEMA_VERSION,
    AnyEvent,
    ClickEvent,
    PurchaseEvent,
    Reject,
    ShareEvent,
    utc_now,
    validate_event,
)
from pipeline.sdk.ids import event_id_for, new_event_id

Properties = dict[str, str | int | float | bool | None]


class InvalidEvent(ValueError):
    """The arguments do not make a valid v1 event; the message says which field and why."""


def _build(fields: dict[str, Any]) -> AnyEvent:
    fields = {k: v for k, v in fields.items() if v is not None}
    result = validate_event(fields, b"")
    if isinstance(result, Reject):
        raise InvalidEvent(f"{fields.get('type')} event: {result.detail}")
    return result


def _common(
    kind: str,
    brand_id: str,
    user_id: str,
    channel: str,
    event_id: str,
    occurred_at: dt.datetime | None,
    kol_id: str | None,
    campaign_id: str | None,
    properties: Properties | None,
) -> dict[str, Any]:
    return {
        "type": kind,
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "brand_id": brand_id,
        "user_id": user_id,
        "occurred_at": occurred_at or utc_now(),
        "channel": channel,
        "kol_id": kol_id,
        "campaign_id": campaign_id,
        "properties": properties,
    }


def click_event(
    brand_id: str,
    user_id: str,
    channel: str,
    *,
    share_id: str | None = None,
    target_id: str | None = None,
    kol_id: str | None = None,
    campaign_id: str | None = None,
    properties: Properties | None = None,
    occurred_at: dt.datetime | None = None,
    event_id: str | None = None,
) -> ClickEvent:
    """A click; its id is random unless given (a click has no natural key)."""
    fields = _common(
        "click",
        brand_id,
        user_id,
        channel,
        event_id or new_event_id(),
        occurred_at,
        kol_id,
        campaign_id,
        properties,
    )
    fields.update(share_id=share_id, target_id=target_id)
    event = _build(fields)
    assert isinstance(event, ClickEvent)
    return event


def share_event(
    brand_id: str,
    user_id: str,
    channel: str,
    share_id: str,
    *,
    parent_share_id: str | None = None,
    target_id: str | None = None,
    kol_id: str | None = None,
    campaign_id: str | None = None,
    properties: Properties | None = None,
    occurred_at: dt.datetime | None = None,
    event_id: str | None = None,
) -> ShareEvent:
    """A share; its id derives from ``share_id`` (one share, one event) unless given."""
    fields = _common(
        "share",
        brand_id,
        user_id,
        channel,
        event_id or event_id_for(brand_id, "share", share_id),
        occurred_at,
        kol_id,
        campaign_id,
        properties,
    )
    fields.update(share_id=share_id, parent_share_id=parent_share_id, target_id=target_id)
    event = _build(fields)
    assert isinstance(event, ShareEvent)
    return event


def purchase_event(
    brand_id: str,
    user_id: str,
    channel: str,
    order_id: str,
    amount: Decimal | str | int,
    currency: str,
    *,
    share_id: str | None = None,
    kol_id: str | None = None,
    campaign_id: str | None = None,
    properties: Properties | None = None,
    occurred_at: dt.datetime | None = None,
    event_id: str | None = None,
) -> PurchaseEvent:
    """A purchase; its id derives from ``order_id`` (one order, one event) unless given.

    ``amount`` is exact: pass a Decimal or a string ("199.90"), not a float.
    """
    if isinstance(amount, float):
        raise InvalidEvent("amount must be a Decimal, str or int, not a float (inexact)")
    fields = _common(
        "purchase",
        brand_id,
        user_id,
        channel,
        event_id or event_id_for(brand_id, "purchase", order_id),
        occurred_at,
        kol_id,
        campaign_id,
        properties,
    )
    fields.update(order_id=order_id, amount=amount, currency=currency, share_id=share_id)
    event = _build(fields)
    assert isinstance(event, PurchaseEvent)
    return event
