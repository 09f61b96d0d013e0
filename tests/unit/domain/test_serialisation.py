"""Messages, states and rows survive their JSON form (topics, changelogs, the sink)."""

from __future__ import annotations

import json
import random

import pytest

from pipeline.contract.events import decode_message
from pipeline.domain import (
    ROW_TYPES,
    Addressed,
    ChildShareRegistered,
    DomainConfig,
    Engine,
    KocStatusChanged,
    LoyaltyRow,
    Message,
    ParentChainResolved,
    ProcessorName,
    ReferralCredited,
    ShareResolved,
    ShareWatched,
    coalesce_snapshots,
    message_from_dict,
    message_to_dict,
    row_from_dict,
)
from tests.unit.domain.builders import DAY, Events, us


def sample_engine() -> Engine:
    ev = Events()
    engine = Engine(rng=random.Random(7))
    engine.feed(
        [
            ev.click("alice", 0, kol="k1"),
            ev.share("alice", 1, "s1", kol="k1"),
            ev.click("bob", 2, share="s1"),
            ev.share("bob", 3, "s2", parent="s1"),
            ev.click("carol", 4, share="s2"),
            ev.purchase("carol", 5, "o1", "10.50"),
            ev.purchase("bob", 6, "o2", "3", currency="USD", share="s2"),
            ev.purchase("alice", 7, "o3", share="s2"),
        ],
        batch_size=2,
    )
    engine.feed([ev.click("dave", 5 * DAY), ev.click("erin", 0)])  # erin is late
    return engine


def test_every_row_type_round_trips_through_json() -> None:
    engine = sample_engine()
    engine.finish()
    assert {type(r) for r in engine.rows} == set(ROW_TYPES)
    for row in engine.rows:
        assert row_from_dict(json.loads(json.dumps(row.to_dict()))) == row


def test_every_message_type_round_trips_through_json() -> None:
    ev = Events()
    messages: list[Message] = [
        ev.click("a", 0, share="s", kol="k"),
        ev.share("a", 0, "s", parent="p"),
        ev.purchase("a", 0, "o", "1.2345", share="s"),
        ShareWatched("b", "s", "u", us(1)),
        ChildShareRegistered("b", "p", "c"),
        ParentChainResolved("b", "c", "p", 3, 1, "r", None),
        ShareResolved("b", "u", "s", 2, "sharer", None, None, None),
        ReferralCredited("b", "sharer", "pid", "o", "buyer", us(2), 4, False),
        KocStatusChanged("b", "u", 1, None),
    ]
    for message in messages:
        assert message_from_dict(json.loads(json.dumps(message_to_dict(message)))) == message
    addressed = Addressed(ProcessorName.SHARE, "b", "s", messages[3])
    assert Addressed.from_dict(json.loads(json.dumps(addressed.to_dict()))) == addressed


def test_every_state_round_trips_through_json() -> None:
    engine = sample_engine()
    for name, table in engine.states.items():
        processor = engine.processors[name]
        assert table, name
        for state in table.values():
            d = processor.state_to_dict(state)
            again = processor.state_from_dict(json.loads(json.dumps(d)))
            assert again == state


def test_coalescing_keeps_the_newest_snapshot_per_key_and_every_signed_row() -> None:
    engine = sample_engine()
    rows = coalesce_snapshots(engine.rows)
    loyalty = [r for r in rows if isinstance(r, LoyaltyRow)]
    assert len(loyalty) == len({r.key() for r in loyalty}) == len(engine.loyalty())
    assert set(loyalty) == set(engine.loyalty().values())
    dropped = [r for r in engine.rows if r not in rows]
    assert all(type(r).__name__.endswith(("LoyaltyRow", "ChainRow", "SharerRow")) for r in dropped)


@pytest.mark.parametrize(
    "kwargs",
    [{"attribution_window_s": -1}, {"koc_min_buyers": 0}, {"allowed_lateness_s": -DAY}],
)
def test_invalid_config_is_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DomainConfig(**kwargs)  # type: ignore[arg-type]


#: Events as brand apps send them: UTC as "Z" and other offsets, every optional field.
CONTRACT_EVENTS = [
    b'{"event_id":"c1","type":"click","schema_version":1,"brand_id":"b","user_id":"u",'
    b'"occurred_at":"2026-11-02T08:00:00.250+08:00","channel":"app","kol_id":"k",'
    b'"campaign_id":"cmp","share_id":"s","target_id":"t","properties":{"a":"x","n":2,'
    b'"f":1.5,"ok":true,"none":null},"received_at":"2026-11-02T00:00:01Z"}',
    b'{"event_id":"s1","type":"share","schema_version":1,"brand_id":"b","user_id":"u",'
    b'"occurred_at":"2026-11-02T00:00:00Z","channel":"wechat","share_id":"s2",'
    b'"parent_share_id":"s"}',
    b'{"event_id":"p1","type":"purchase","schema_version":1,"brand_id":"b","user_id":"u",'
    b'"occurred_at":"2026-11-02T00:00:00-05:00","channel":"app","order_id":"o",'
    b'"amount":"12.5000","currency":"CNY"}',
]


@pytest.mark.parametrize("raw", CONTRACT_EVENTS, ids=["click", "share", "purchase"])
def test_events_between_processors_keep_their_contract_form(raw: bytes) -> None:
    (event,) = decode_message(raw).events
    form = json.loads(json.dumps(message_to_dict(event)))
    # Still a valid event of the contract, equal to the one ingest validated ...
    assert type(event).model_validate(form) == event
    # ... and read back with the same field types.
    again = message_from_dict(form)
    assert again == event
    assert {k: type(v) for k, v in again.__dict__.items()} == {
        k: type(v) for k, v in event.__dict__.items()
    }
    assert again.occurred_at.utcoffset() == event.occurred_at.utcoffset()
