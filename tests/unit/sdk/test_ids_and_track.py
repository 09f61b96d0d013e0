"""Event ids are made once, when an event is tracked; natural keys give stable ids."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from pipeline.contract.events import ClickEvent, PurchaseEvent, ShareEvent
from pipeline.sdk import InvalidEvent, click_event, event_id_for, purchase_event, share_event
from pipeline.sdk.ids import EVENT_ID_NAMESPACE, new_event_id


def test_natural_key_ids_are_stable_and_distinct() -> None:
    a = event_id_for("acme", "purchase", "o-1")
    assert a == event_id_for("acme", "purchase", "o-1")
    assert a == str(uuid.uuid5(EVENT_ID_NAMESPACE, '["acme","purchase","o-1"]'))
    assert a != event_id_for("acme", "purchase", "o-2")
    assert a != event_id_for("bolt", "purchase", "o-1")
    assert a != event_id_for("acme", "share", "o-1")
    # Parts cannot be shifted between brand and key to collide.
    assert event_id_for("a", "b,c", "d") != event_id_for("a", "b", "c,d")
    assert event_id_for("a", "p", '"b","c"') != event_id_for("a", "p", "b", "c")


def test_the_namespace_never_changes() -> None:
    # Changing it would change every derived id, and re-tracked orders would count twice.
    assert event_id_for("acme", "purchase", "o-1") == "17027b61-2f16-5a0a-a0f4-82e4d9de327a"


def test_random_ids_differ() -> None:
    assert len({new_event_id() for _ in range(1000)}) == 1000


def test_purchase_and_share_ids_come_from_their_natural_keys() -> None:
    p1 = purchase_event("acme", "u1", "app", "o-9", "19.90", "CNY")
    p2 = purchase_event("acme", "u1", "app", "o-9", Decimal("19.90"), "CNY")
    assert isinstance(p1, PurchaseEvent)
    assert p1.event_id == p2.event_id == event_id_for("acme", "purchase", "o-9")
    s = share_event("acme", "u1", "wechat_group", "s-1", parent_share_id="s-0")
    assert isinstance(s, ShareEvent)
    assert s.event_id == event_id_for("acme", "share", "s-1")
    c1, c2 = click_event("acme", "u1", "app"), click_event("acme", "u1", "app")
    assert isinstance(c1, ClickEvent) and c1.event_id != c2.event_id
    assert click_event("acme", "u1", "app", event_id="mine").event_id == "mine"


def test_builders_fill_the_contract_fields() -> None:
    t = dt.datetime(2026, 11, 23, 10, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    c = click_event("acme", "u1", "kol_post", kol_id="kol-1", occurred_at=t, properties={"a": 1})
    assert (c.schema_version, c.brand_id, c.kol_id, c.occurred_at) == (1, "acme", "kol-1", t)
    assert c.properties == {"a": 1}
    now = click_event("acme", "u1", "app").occurred_at
    assert now.tzinfo is not None


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: purchase_event("acme", "u1", "app", "o", "-1", "CNY"), "amount"),
        (lambda: purchase_event("acme", "u1", "app", "o", 1.5, "CNY"), "float"),
        (lambda: purchase_event("acme", "u1", "app", "o", "1", "rmb"), "currency"),
        (lambda: click_event("acme", "", "app"), "user_id"),
        (
            lambda: click_event("acme", "u", "app", occurred_at=dt.datetime(2026, 1, 1)),
            "occurred_at",
        ),
    ],
)
def test_invalid_events_raise_at_once_with_the_field(build: object, fragment: str) -> None:
    with pytest.raises(InvalidEvent, match=fragment):
        build()  # type: ignore[operator]
